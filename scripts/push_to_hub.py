"""Verify a final MHE checkpoint folder and upload it to a Hugging Face Hub model repo (mhe_transformers.hub).

    python scripts/push_to_hub.py outputs/demo/pretrain-mhe_mul --repo_id your-name/mhe-mul-wordnet-tiny [--private]

Nothing is sent unless the folder is complete and loads with trust_remote_code=True in a fresh process without
mhe_transformers (see docs/hub.md). Log in first with `hf auth login`, or set HF_TOKEN.
"""

import argparse

from mhe_transformers.hub import CheckpointError, push_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="a final checkpoint folder written by the training scripts")
    parser.add_argument("--repo_id", required=True, help="the Hub model repo, e.g. your-name/mhe-mul-tiny")
    parser.add_argument(
        "--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)"
    )
    parser.add_argument("--commit_message", default="Upload MHE checkpoint")
    args = parser.parse_args()

    try:
        commit = push_checkpoint(
            args.checkpoint_dir, args.repo_id, private=args.private, commit_message=args.commit_message
        )
    except CheckpointError as error:
        raise SystemExit(f"Not uploaded. {error}")
    print(f"Uploaded {args.checkpoint_dir} to {commit.commit_url}")


if __name__ == "__main__":
    main()
