"""The benchmark report (python -m fastconv bench): its arithmetic, not its timings."""
import math

from fastconv.benchmarks import all_cases
from fastconv.benchmarks.runner import copy_bandwidth, format_table


def test_copy_bandwidth_is_bytes_read_plus_written_per_second():
    gbps = copy_bandwidth(threads=2, nbytes=2**20, repeats=3)
    assert math.isfinite(gbps) and gbps > 0


def test_memory_bound_rows_report_their_share_of_the_copy_bandwidth():
    rows = [{"case": "unpool_2x2", "impl": "fastconv", "median_s": 0.002, "gbytes_per_s": 12.0},
            {"case": "unpool_2x2", "impl": "torch", "median_s": 0.004}]
    table = format_table(rows, copy_gbps=24.0)
    assert "12.0 GB/s (50% of copy)" in table and "(2.00x)" in table
    assert "% of copy" not in format_table(rows)


def test_depthwise_cases_count_their_bytes_and_dense_ones_do_not():
    cases = {c.name: c for c in all_cases()}
    for name in ("depthwise_3x3", "depthwise_3x3_s2", "depthwise_5x5", "depthwise_5x5_s2",
                 "depthwise_backward_3x3", "depthwise_backward_3x3_s2"):
        assert cases[name].bytes_moved is not None, name
    for name in ("resnet_3x3_64", "image_1ch_7x7", "conv2d_backward_64"):
        assert cases[name].bytes_moved is None, name
    case = cases["depthwise_3x3_s2"]
    inputs = case.make_inputs()
    # x (1,144,56,56) + w (144,1,3,3) + out (1,144,28,28), float32
    assert case.bytes_moved(inputs) == 4 * (144 * 56 * 56 + 144 * 9 + 144 * 28 * 28)


def test_a_timed_training_step_writes_every_weight_without_moving_it():
    """The networks' training step changes every parameter's bytes, as an optimizer does (so
    no weight transformed or packed by the previous step is reused), by one unit in the last
    place, so the timed steps keep the numerics of the checked run."""
    import pytest
    torch = pytest.importorskip("torch")
    from fastconv.benchmarks.models import NETS, step, with_fastconv_layers
    torch.manual_seed(0)
    model = with_fastconv_layers(NETS["tcn"][0](levels=2))
    x = torch.randn(2, 16, 64)
    before = [p.detach().clone() for p in model.parameters()]
    step(model, x, train=True)
    for old, new in zip(before, model.parameters()):
        assert (old != new.detach()).all()
        np_old, np_new = old.numpy(), new.detach().numpy()
        assert (abs(np_old.view("int32") - np_new.view("int32")) == 1).all()
    step(model, x, train=True)
    for old, new in zip(before, model.parameters()):
        assert torch.equal(old, new.detach())


def test_the_network_benchmark_times_each_library_in_fresh_processes():
    """bench/networks.py --processes: each library's copy timed in processes of its own (the
    agreement checked in the parent first), a row per mode with both libraries' medians, the
    ratio and the page faults per step that the fresh processes measured."""
    import os
    import re
    import subprocess
    import sys
    import pytest
    pytest.importorskip("torch")
    script = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "networks.py")
    out = subprocess.run([sys.executable, script, "--nets", "mobilenet_v2", "--batch", "2",
                          "--size", "32", "--formats", "channels_last", "--rounds", "1",
                          "--steps", "1", "--processes", "--train"],
                         check=True, capture_output=True, text=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("mobilenet_v2 ")]
    assert [row.split()[2] for row in rows] == ["infer", "train"], out
    for row in rows:
        match = re.search(r"torch +([\d.]+) ms .*fastconv +([\d.]+) ms .*ratio ([\d.]+)"
                          r"  page faults/step torch (\d+) fastconv (\d+)$", row)
        assert match, row
        torch_ms, fastconv_ms, ratio = (float(match.group(i)) for i in (1, 2, 3))
        assert torch_ms > 0 and fastconv_ms > 0
        # the times are printed to 0.05 ms, the ratio (of the unrounded ones) to 0.005
        assert (torch_ms - 0.05) / (fastconv_ms + 0.05) - 0.005 <= ratio \
            <= (torch_ms + 0.05) / (fastconv_ms - 0.05) + 0.005, row
