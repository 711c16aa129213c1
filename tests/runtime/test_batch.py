"""Batches of files: one model for all, failures reported and skipped, nothing else lost."""
import numpy as np
import pytest
import torch

from conftest import make_smooth_image
from stcm.cli import main
from stcm.config import get_config
from stcm.errors import ConfigError, DataError
from stcm.models.checkpoint import save_checkpoint
from stcm.models.codec import STCM
from stcm.runtime.batch import plan_jobs, run_jobs
from stcm.runtime.codec import Codec
from stcm.runtime.files import compress_file
from stcm.runtime.imageio import Raster, read_raster, write_raster


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _images(folder, n=3, damaged=()):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = np.rint(make_smooth_image(np.random.default_rng(i), 3, 40, 48) * 255)
        path = folder / f"img{i}.png"
        write_raster(path, Raster(pixels.astype(np.uint8)))
        if i in damaged:
            path.write_bytes(path.read_bytes()[:200])  # truncated
        paths.append(path)
    return paths


def test_plans_keep_relative_paths_and_refuse_clashes(tmp_path):
    _images(tmp_path / "in" / "a", 2)
    _images(tmp_path / "in" / "b", 1)
    jobs = plan_jobs("compress", [tmp_path / "in"], tmp_path / "out", ".stcm")
    assert [j.target.relative_to(tmp_path / "out").as_posix() for j in jobs] == [
        "a/img0.stcm", "a/img1.stcm", "b/img0.stcm"]
    with pytest.raises(ConfigError, match="both be written"):
        plan_jobs("compress", [tmp_path / "in" / "a" / "img0.png",
                               tmp_path / "in" / "b" / "img0.png"], tmp_path / "out", ".stcm")
    with pytest.raises(DataError, match="does not exist"):
        plan_jobs("compress", [tmp_path / "nope.png"], tmp_path / "out", ".stcm")
    with pytest.raises(DataError, match="holds no"):
        plan_jobs("decompress", [tmp_path / "in"], tmp_path / "out", ".tif")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_file_is_reported_and_the_others_are_written(checkpoint, tmp_path, workers):
    paths = _images(tmp_path / "in", 3, damaged={1})
    jobs = plan_jobs("compress", paths, tmp_path / "out", ".stcm")
    heard = []
    outcomes = run_jobs("compress", jobs, {"model": str(checkpoint)}, {"quality": 0.5},
                        workers=workers, threads=1, on_outcome=heard.append)
    assert len(heard) == 3 and {o.job for o in outcomes} == set(jobs)
    failed = [o for o in outcomes if not o.ok]
    assert [o.job.source.name for o in failed] == ["img1.png"]
    assert "truncated" in failed[0].error
    codec = Codec(str(checkpoint))
    for o in outcomes:
        if o.ok:  # the same bytes as compressing that file alone
            alone = tmp_path / "alone" / o.job.target.name
            compress_file(codec, o.job.source, alone, 0.5)
            assert o.job.target.read_bytes() == alone.read_bytes()
    assert not (tmp_path / "out" / "img1.stcm").exists()


def test_the_command_line_codes_folders_and_exits_1_on_a_failure(checkpoint, tmp_path,
                                                                  capsys):
    _images(tmp_path / "in", 2, damaged={0})
    code = main(["compress", str(tmp_path / "in"), "-o", str(tmp_path / "packed"),
                 "--model", str(checkpoint), "--quality", "0.5", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 1 and "img0.png: error" in captured.err
    assert "1 of 2 file(s) written" in captured.out
    assert main(["decompress", str(tmp_path / "packed"), "-o", str(tmp_path / "back"),
                 "--format", "png", "--model", str(checkpoint)]) == 0
    back = read_raster(tmp_path / "back" / "img1.png").pixels
    assert back.shape == (3, 40, 48)
    # A second run does not overwrite without --force: every file fails, none is replaced.
    before = (tmp_path / "packed" / "img1.stcm").read_bytes()
    assert main(["compress", str(tmp_path / "in" / "img1.png"), "-o", str(tmp_path / "packed"),
                 "--model", str(checkpoint), "--quality", "0.9"]) == 1
    assert (tmp_path / "packed" / "img1.stcm").read_bytes() == before
    assert main(["compress", str(tmp_path / "in" / "img1.png"), "--model",
                 str(checkpoint)]) == 2  # one path and no -o: a usage error
