"""A reference saved on one machine judges candidates on another: `parity --save-reference` / `--reference ref.npz`.

The judging run happens in a fresh interpreter where `import torch` fails, as on a Jetson without PyTorch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from eca_deploy.cli.main import main
from eca_deploy.runtime.harness.parity import read_saved_reference

NO_TORCH = "import sys; sys.modules['torch'] = None; from eca_deploy.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _without_torch(*argv):
    return subprocess.run([sys.executable, "-c", NO_TORCH, *argv], capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_saved_reference_judges_candidates_where_torch_cannot_be_imported(digits, tmp_path, capsys):
    ref = tmp_path / "ref.npz"
    spec = f"torch:{digits.model}:{digits.checkpoint}"
    common = ["--data", str(digits.val_dir), "--count", "24", "--imgsz", str(digits.imgsz), "--threads", "1"]
    assert main(["parity", "--reference", spec, "--save-reference", str(ref), *common]) == 0
    capsys.readouterr()
    meta, logits, labels = read_saved_reference(ref)
    assert logits.shape == (24, digits.num_classes) and labels.shape == (24,)
    assert meta["imgsz"] == digits.imgsz and meta["count"] == 24 and meta["seed"] == 0
    assert len(meta["weights_sha256"]) == 64 and len(meta["data"]["hash"]) == 64 and meta["model"] == digits.model

    out = tmp_path / "parity.json"
    done = _without_torch("parity", "--reference", str(ref), "--candidate", str(digits.onnx), *common,
                          "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "the candidate passed" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["status"] == "reference" and rows[1]["status"] == "pass"
    np.testing.assert_allclose(rows[0]["parity"]["top1"], float(np.mean(logits.argmax(1) == labels)))

    other = ["--data", str(digits.val_dir), "--count", "24", "--seed", "1", "--imgsz", str(digits.imgsz)]
    refused = _without_torch("parity", "--reference", str(ref), "--candidate", str(digits.onnx), *other,
                             "--output", str(tmp_path / "other.json"))
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "is not the data ref.npz was saved from" in refused.stderr


def test_a_file_that_is_not_a_saved_reference_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "ref.npz"
    np.savez(bogus, logits=np.zeros((2, 3)))
    onnx_candidate = tmp_path / "m.onnx"
    onnx_candidate.write_bytes(b"")
    code = main(["parity", "--reference", str(bogus), "--candidate", str(onnx_candidate)])
    err = capsys.readouterr().err
    assert code == 2 and "is not a reference saved by `eca-deploy parity --save-reference`" in err
    assert len(err.strip().splitlines()) == 1


def test_pipeline_refuses_a_saved_reference_of_another_model_before_any_work(tmp_path, capsys):
    ref = tmp_path / "ref.npz"
    meta = {"format": "eca-deploy-reference/1", "reference": "torch:eca_resnet50:w.pth", "kind": "torch",
            "backend": "torch", "precision": "fp32", "model": "eca_resnet50", "weights_sha256": None,
            "model_sha256": None, "imgsz": 32, "count": 4, "seed": 0, "metrics": {},
            "data": {"hash": "synthetic-photo-like-seed0-n4-32px", "samples": 4}}
    np.savez(ref, logits=np.zeros((4, 10), np.float32), labels=np.zeros(0, np.int64), meta=np.array(json.dumps(meta)))
    code = main(["pipeline", "--model", "eca_resnet18", "--reference", str(ref), "--imgsz", "32", "--count", "4",
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "ref.npz is a reference of eca_resnet50, not eca_resnet18" in err
    assert not (tmp_path / "out" / "eca_resnet18.onnx").exists()
