"""The command line: train writes a checkpoint that info describes; errors are clean."""
import json
import subprocess
import sys

from stcm.cli import main


def test_train_then_info_describes_the_checkpoint(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--config", "tiny", "--data", str(image_folder), "--steps", "3",
               "--crop", "64", "--batch-size", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    assert (out / "checkpoint.safetensors").is_file()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and "spatial=diag x3 with residual blocks" in text and "3 steps" in text
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 3 and info["config"]["M"] == 32 and info["parameters"]["total"] > 0


def test_bad_input_gives_an_error_message_not_a_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--config", "gigantic", "--data", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "unknown model preset" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "stcm", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("stcm ")


def test_train_resume_takes_the_checkpoints_config_and_step(image_folder, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", "--config", "tiny", "--data", str(image_folder), "--steps", "2",
                 "--crop", "64", "--batch-size", "2", "--out", str(first), "--quiet",
                 "--half-copy", str(tmp_path / "resume.safetensors")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "resume.safetensors"), "--data",
                 str(image_folder), "--steps", "3", "--crop", "64", "--batch-size", "2",
                 "--lr-schedule", "cosine", "--warmup", "2", "--out", str(tmp_path / "second"),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "at step 2 (fresh optimizer)" in captured.err and "steps/s" in captured.out
    assert main(["info", str(tmp_path / "second"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 3 and info["config"]["name"] == "tiny"
