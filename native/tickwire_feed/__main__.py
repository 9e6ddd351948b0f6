"""`python -m tickwire_feed ...` is `tickwire-feed ...` (handy inside `ip netns exec`)."""
import sys

from .cli import main

sys.exit(main())
