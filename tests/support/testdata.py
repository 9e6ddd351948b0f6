"""Where the real ITCH captures are: ../shared/testdata/itch50 beside the checkout (CI clones the
repository with shared/ beside it). They are test input only and never committed."""
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAPTURES_DIR = os.path.normpath(os.path.join(ROOT, "..", "shared", "testdata", "itch50"))


def capture_files() -> list[str]:
    return sorted(glob.glob(os.path.join(CAPTURES_DIR, "**", "*.pcap"), recursive=True))
