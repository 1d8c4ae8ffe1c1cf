"""The count app on what users of the peers bring: token ids and masks, a Hugging Face model built from a small
config (nothing downloaded), JSON output and a module tree."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from foldconv.errors import FoldError
from foldconv.experiments.counting import CountExperiment, count_app

pytest.importorskip("transformers")

BERT = {"_target_": "transformers.BertModel", "config": {
    "_target_": "transformers.BertConfig", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "vocab_size": 100}}
# per layer: 4 projections + 2 feed-forward matmuls on 16 tokens, and the two attention products; then the pooler
BERT_MACS = 2 * (16 * (4 * 32 * 32 + 2 * 32 * 64) + 2 * 2 * 16 * 16 * 16) + 32 * 32


def test_a_hugging_face_model_with_token_ids_and_a_mask_counts_exactly_as_json(tmp_path):
    exp = CountExperiment(model=BERT, inputs=[[1, 16, "long"], [1, 16, "bool"]], plot=False, d2l_table=False,
                          format="json")
    result = count_app(exp, tmp_path)
    assert result.ok, [c.row() for c in result.failed]
    document = json.loads(result.text)
    (model,) = document["models"]
    assert model["input_dtypes"] == ["int64", "bool"] and model["input_shapes"] == [[1, 16], [1, 16]]
    assert model["totals"]["macs"] == BERT_MACS and not model["unsupported_ops"]
    assert json.loads((tmp_path / "BertModel.json").read_text())["totals"]["macs"] == BERT_MACS
    assert "├─ encoder" in (tmp_path / "BertModel_tree.txt").read_text()
    from foldconv.experiments.app import conclude

    conclude(result, tmp_path)  # summary.md is for reading: the answer and the files, not the JSON stdout printed
    summary = (tmp_path / "summary.md").read_text()
    assert '"models"' not in summary and len(summary.splitlines()) < 10, summary[:500]


def test_the_tables_carry_readable_totals_and_the_tree_its_depth(tmp_path):
    exp = CountExperiment(model="resnet18", input_shape=[1, 3, 64, 64], plot=False, d2l_table=False, tree_depth=1,
                          fold_compare_r=None)
    text = count_app(exp, tmp_path).text
    assert "149 MMACs" in text and "11.7 M params" in text
    assert "├─ layer1" in text and "├─ layer1.0" not in text and "│  ├─ 0" not in text


@pytest.mark.parametrize("fields, param", [
    ({"inputs": [[1, 16, "lnog"]]}, "inputs"),
    ({"inputs": "ids"}, "inputs"),
    ({"format": "yaml"}, "format"),
    ({"tree_depth": -1}, "tree_depth"),
])
def test_bad_inputs_format_and_depth_are_named(fields, param):
    with pytest.raises(FoldError) as err:
        CountExperiment(model="resnet18", **fields)
    assert err.value.param == param


def test_token_ids_and_masks_on_the_command_line(tmp_path):
    overrides = [f"model.{k}={v}" for k, v in (("_target_", BERT["_target_"]),)]
    overrides += [f"+model.config.{k}={v}" for k, v in BERT["config"].items()]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "count.py"), f"hydra.run.dir={tmp_path}", *overrides,
         "inputs=[[1,16,long],[1,16,bool]]", "plot=false", "d2l_table=false", "tree_depth=1"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{BERT_MACS:,}" in result.stdout and "├─ embeddings" in result.stdout
