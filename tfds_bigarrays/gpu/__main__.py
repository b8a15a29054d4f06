import sys

from tfds_bigarrays.gpu._run import wrapper_main

sys.exit(wrapper_main())
