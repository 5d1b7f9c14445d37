"""Verify a final MHE checkpoint folder and upload it to a Hugging Face Hub model repo (mhe_transformers.hub.push).

    python scripts/push_to_hub.py --checkpoint_dir outputs/demo/pretrain-mhe_mul \\
        --hub_model_id your-name/mhe-mul-wordnet-tiny [--hub_private_repo]

Every option is a named flag, as in the training scripts (`--hub_model_id`, `--hub_private_repo`: the names
`--push_to_hub` uses there); `--help` lists them.

Nothing is sent unless the folder is complete and loads with trust_remote_code=True in a fresh process without
mhe_transformers (see docs/hub.md). Log in first with `hf auth login`, or set HF_TOKEN.
"""

from mhe_transformers.hub.push import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
