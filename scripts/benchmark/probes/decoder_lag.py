"""Is a benchmark cell's own decoder behind what its features allow, or at it?

Loads a finished fgsynth cell (its spec.json and checkpoint), measures its decoder's
``recon_r2_8px`` on 256 validation images under the training augmentation (train-mode
backbone, as ``pairs`` measures), then trains a copy of that decoder further by Adam at a small
rate on frozen train-mode features of 2048 augmented training images and measures again. A
decoder that gains much in a few small steps was left a noisy snapshot by its last updates
(docs/benchmark.md, section 4). Usage, from the repository root:

    python scripts/benchmark/probes/decoder_lag.py results/v2/cells/fgsynth_byol-seed0
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torchvision import datasets

from solo_fgsynth.benchmark.cell import load_trained_method, training_view
from solo_fgsynth.benchmark.pairs import (
    HEADROOM_TRAIN_IMAGES,
    MEASURED_IMAGES,
    evenly_spaced,
    stacked_images,
    train_mode_features,
)
from solo_fgsynth.benchmark.reuse import SPEC_FILE, TRAINING_RECORD, cell_checkpoint
from solo_fgsynth.data import default_cache_dir, prepare_data_cfg
from solo_fgsynth.data.views import EvalView
from solo_fgsynth.launch import load_config
from solo_fgsynth.synth.decoder import reconstruction_loss
from solo_fgsynth.synth.quality import POOLED_SIZE, recon_r2

CONFIGS = Path(__file__).resolve().parents[2] / "pretrain" / "fgmarks"


def main() -> None:
    """Print the cell decoder's R² at 8 px, then after 100, 300 and 600 more Adam steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell_dir", type=Path)
    parser.add_argument("--lr", type=float, default=2e-5, help="Adam rate of the extra steps")
    args = parser.parse_args()
    spec = json.loads((args.cell_dir / SPEC_FILE).read_text())
    record = json.loads((args.cell_dir / TRAINING_RECORD).read_text())
    cfg = load_config(str(CONFIGS), spec["config_name"], spec["overrides"])
    prepare_data_cfg(cfg.data, default_cache_dir())
    view = EvalView.of(cfg.augmentations[0])
    model = load_trained_method(cell_checkpoint(args.cell_dir, record["checkpoint"]))
    backbone, decoder = model.backbone.cpu().float(), copy.deepcopy(model.fgsynth.decoder).float()
    train_view = training_view(cfg)
    val = datasets.ImageFolder(cfg.data.val_path, transform=view.transform())
    train = datasets.ImageFolder(cfg.data.train_path, transform=view.transform())
    torch.manual_seed(0)
    eval_images = stacked_images(val, evenly_spaced(val, MEASURED_IMAGES), train_view)
    train_images = stacked_images(train, evenly_spaced(train, HEADROOM_TRAIN_IMAGES), train_view)
    eval_features = train_mode_features(backbone, eval_images)
    train_features = train_mode_features(backbone, train_images)
    adam = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(0)
    done = 0
    for target in (0, 100, 300, 600):
        for _ in range(target - done):
            rows = torch.randint(0, len(train_features), (64,), generator=generator)
            loss = reconstruction_loss(decoder(train_features[rows]), train_images[rows])
            adam.zero_grad(set_to_none=True)
            loss.backward()
            adam.step()
        done = target
        with torch.no_grad():
            r2 = recon_r2(decoder(eval_features), eval_images, POOLED_SIZE)
        print(f"+{target} Adam steps at {args.lr:g}: recon_r2_8px {r2:.3f}", flush=True)


if __name__ == "__main__":
    main()
