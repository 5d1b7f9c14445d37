"""PEFT and sentence-transformers with MHE checkpoints, each checked by reloading in a fresh process."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mhe_transformers.hub.push import run_without_package

SENTENCES = ["a small dog seen near the river", "to run in a quick way across the field", "the old chair"]


def result_of(process):
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


# Loads the base checkpoint (its pooler and classifier newly initialised from another seed) and an adapter, in a
# process where mhe_transformers cannot be imported: only the checkpoint's remote code and the adapter define it.
PEFT_RELOAD = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
checkpoint, sentences, adapters = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
inputs = tokenizer(sentences, padding=True, return_tensors="pt")
logits = {}
for seed, adapter in enumerate(adapters, start=123):
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=3, trust_remote_code=True)
    model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        logits[adapter] = model(**inputs).logits.tolist()
print("RESULT " + json.dumps({"logits": logits, "blocked": "mhe_transformers" not in sys.modules}))
"""


def train_lora(checkpoint, config_for, steps=5):
    from peft import get_peft_model

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=3)
    model = get_peft_model(base, config_for(base))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**inputs, labels=torch.tensor([0, 1, 2])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    return model, logits


def test_lora_adapter_reloads_with_identical_logits_in_a_fresh_process(tiny_pretrained_dir, tmp_path):
    peft = pytest.importorskip("peft", reason="needs the [peft] extra: pip install 'mhe-transformers[peft]'")
    from mhe_transformers.interop.lora import lora_config, register_peft

    # After register_peft(), LoraConfig without target_modules finds MHE's defaults.
    register_peft()
    plain = lambda model: peft.LoraConfig(task_type="SEQ_CLS", r=4)  # noqa: E731
    plain_model, plain_logits = train_lora(tiny_pretrained_dir, plain)
    targeted = {name.rsplit(".", 1)[-1] for name, _ in plain_model.named_modules() if name.endswith(("q_proj", "v_proj"))}
    assert targeted == {"q_proj", "v_proj"} and plain_model.peft_config["default"].target_modules == {"q_proj", "v_proj"}
    plain_model.save_pretrained(tmp_path / "plain")

    model, logits = train_lora(tiny_pretrained_dir, lambda base: lora_config(base, r=4))
    assert "pooler" in model.peft_config["default"].modules_to_save
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("pooler" in name for name in trainable) and any("lora_A" in name for name in trainable)
    model.save_pretrained(tmp_path / "recipe")

    process = run_without_package(
        PEFT_RELOAD, str(tiny_pretrained_dir), json.dumps(SENTENCES), str(tmp_path / "recipe"), str(tmp_path / "plain")
    )
    result = result_of(process)
    assert result["blocked"]
    torch.testing.assert_close(torch.tensor(result["logits"][str(tmp_path / "recipe")]), logits, atol=1e-5, rtol=0)
    # What the recipe fixes: with PEFT's defaults alone, the new pooler is neither trained nor saved, so a reload
    # (whose pooler is initialised afresh) predicts differently.
    plain_reloaded = torch.tensor(result["logits"][str(tmp_path / "plain")])
    assert (plain_reloaded - plain_logits).abs().max() > 1e-4


SENTENCE_TRANSFORMERS_LOAD = """
import json, sys
from sentence_transformers import SentenceTransformer
folder, sentences = sys.argv[1], json.loads(sys.argv[2])
model = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
embeddings = model.encode(sentences, convert_to_tensor=True)
print("RESULT " + json.dumps({
    "modules": [type(module).__name__ for module in model],
    "embeddings": embeddings.tolist(),
    "blocked": "mhe_transformers" not in sys.modules,
}))
"""


def test_sentence_transformers_model_loads_without_the_package(tiny_pretrained_dir, tmp_path):
    pytest.importorskip(
        "sentence_transformers",
        reason="needs the [sentence-transformers] extra: pip install 'mhe-transformers[sentence-transformers]'",
    )
    from transformers import AutoModel

    from mhe_transformers.interop.sentence_transformer import save_sentence_transformer
    from mhe_transformers.utils.run_folder import OutputDirError

    output_dir = save_sentence_transformer(tiny_pretrained_dir, tmp_path / "st", pooling="mean", normalize=True)
    modules = json.loads((output_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((output_dir / "1_Pooling/config.json").read_text())["pooling_mode"] == "mean"
    assert {"configuration_mhe.py", "modeling_mhe.py"} <= {p.name for p in output_dir.iterdir()}
    assert "SentenceTransformer(" in (output_dir / "README.md").read_text()  # the card's usage snippet
    with pytest.raises(OutputDirError, match="already holds an earlier run"):
        save_sentence_transformer(tiny_pretrained_dir, output_dir)  # ours, but not asked to replace it
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    with pytest.raises(OutputDirError, match="did not write"):
        save_sentence_transformer(tiny_pretrained_dir, foreign, overwrite_output_dir=True)
    assert (foreign / "notes.txt").read_text() == "my notes"

    result = result_of(run_without_package(SENTENCE_TRANSFORMERS_LOAD, str(output_dir), json.dumps(SENTENCES)))
    assert result["blocked"] and result["modules"] == ["Transformer", "Pooling", "Normalize"]

    # The same embeddings by hand: masked mean of the encoder's token states, L2-normalised.
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    encoder = AutoModel.from_pretrained(tiny_pretrained_dir).eval()
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(torch.tensor(result["embeddings"]), expected, atol=1e-5, rtol=1e-5)
