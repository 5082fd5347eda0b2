import os
import sys

# tests import the plain references as `import reference`
sys.path.insert(0, os.path.dirname(__file__))
