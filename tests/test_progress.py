"""Progress lines: one per device every few seconds, with the worker's figures."""

from gputests.progress import ProgressLines, line
from harness.devices import Device
from harness.workers import Progress

GPU0 = Device(index=0, kind="cuda", name="H", uuid="GPU-0")
GPU1 = Device(index=1, kind="cuda", name="H", uuid="GPU-1")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_per_device_at_most_every_interval():
    written, clock = [], Clock()
    on_progress = ProgressLines(written.append, every_s=5.0, clock=clock).for_test("matmul")
    for second in range(0, 21):
        clock.now = 100.0 + second
        for gpu in (GPU0, GPU1):
            on_progress(gpu, Progress(phase=f"bf16 window {second}", figures={"tflops": 700.0 + second}))
    assert [w.split()[:2] for w in written] == [["GPU", "0"], ["GPU", "1"]] * 4  # at 5, 10, 15, 20 s
    assert written[0] == "GPU 0   matmul  bf16 window 5          705 TFLOP/s  (5 s)"


def test_figures_carry_their_units():
    text = line(GPU1, "memory", Progress(phase="walking ones", figures={"gbps": 2999.5, "bad": 0.0}), 12.4)
    assert text == "GPU 1   memory  walking ones           3000 GB/s, bad 0  (12 s)"
