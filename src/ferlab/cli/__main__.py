import sys

from ferlab.cli.main import main

sys.exit(main())
