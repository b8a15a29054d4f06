import sys

from tfds_bigarrays._cli import main

sys.exit(main())
