"""Verify a final MHE checkpoint folder and upload it to a Hugging Face Hub model repo (mhe_transformers.hub.push).

    python scripts/push_to_hub.py outputs/demo/pretrain-mhe_mul --repo_id your-name/mhe-mul-wordnet-tiny [--private]

Nothing is sent unless the folder is complete and loads with trust_remote_code=True in a fresh process without
mhe_transformers (see docs/hub.md). Log in first with `hf auth login`, or set HF_TOKEN.
"""

from mhe_transformers.hub.push import main
from mhe_transformers.utils.cli import run_script

if __name__ == "__main__":
    run_script(main)
