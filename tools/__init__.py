"""Development tooling that runs against this checkout, not part of the installed package.

Tools may find the repository from their own location (`REPO`); the library in research/ never
does. Run them from the repository root (`python -m tools.<name>`, or the forwarders in scripts/).
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
