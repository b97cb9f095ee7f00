"""What each test does on the devices: its worker side (`matmul.py`: the code that runs in one
process per device) and its parent side (`matmul_run.py`: what it asks each device and what it
makes of the answers), with what they share (`copies.py`, `crosscheck.py`, `pairwise.py`). The
pytest tests that call them, and the plugin, are one level up (docs/design.md)."""
