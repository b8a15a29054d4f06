import sys

from tfds_bigarrays._cli.main import main

sys.exit(main())
