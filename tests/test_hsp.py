"""The hierarchical head (facevox.hsp_net, training/hsp.py) on CPU: targets, block geometry, a few
training steps, and the training command."""

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the [train] extra (torch)")

TINY = dict(stacks=1, width=32, hsp_levels=4, hsp_channels=4)


@pytest.fixture(scope="module")
def batch(surrey):
    pytest.importorskip("cv2", reason="training's synthetic faces need the [train] extra (OpenCV)")
    from training.sources.synthetic import SyntheticFaces

    return SyntheticFaces(surrey).sample(2, seed=321)


@pytest.fixture(scope="module")
def targets(batch):
    from training.hsp import HierarchyTargets

    return HierarchyTargets(batch.depth, batch.mask, [48, 96, 192, 384], 192)


def tiny_net(**changes):
    from facevox.net import NetConfig, build

    torch.manual_seed(0)
    return build(NetConfig(**{**TINY, **changes}))


def test_front_boundary_leaves_the_walls_out(batch, targets):
    from facevox.hsp_net import BOUNDARY
    from training.hsp import HierarchyTargets

    walls = HierarchyTargets(batch.depth, batch.mask, [48, 96, 192, 384], 192, walls=True)
    front, everything = targets.all_labels(1) == BOUNDARY, walls.all_labels(1) == BOUNDARY
    assert (front <= everything).all() and everything.sum() > 1.3 * front.sum()
    assert front[:, -2:].sum() * 10 < everything[:, -2:].sum()  # the back of the grid (depths 188-192): mostly walls


def test_labels_follow_the_surface(batch, targets):
    from facevox.hsp_net import BOUNDARY, FREE, OCCUPIED

    labels = targets.all_labels(1)  # (b, 96, 96, 96), voxels of 2 crop pixels
    assert labels.shape == (2, 96, 96, 96)
    # The counting rule from the maps alone agrees with the labels voxel by voxel.
    assert torch.equal(targets.boundary_voxels(1), (labels == BOUNDARY).flatten(1).sum(1).float())
    for b in range(2):
        y, x = (int(v) for v in torch.nonzero(batch.mask[b])[len(torch.nonzero(batch.mask[b])) // 2])
        depth = batch.depth[b, y, x].item()
        column = labels[b, :, y // 2, x // 2]
        k = int(depth // 2)
        assert column[k] == BOUNDARY and column[max(k - 3, 0)] == FREE and column[min(k + 3, 95)] == OCCUPIED
    assert (labels[:, :, 0, 0] == FREE).all()  # the crop's corner is off the face


def test_finest_occupancy_matches_the_dense_target(batch, targets):
    """At level 2 (the dense grid) the blocks' soft occupancy is the dense target's; at level 3 the
    surface lies at the same depths, on a grid twice as fine."""
    from training.voxels import occupancy

    dense = occupancy(batch.depth, batch.mask, 200)
    sample = torch.tensor([0, 1])
    origin = []  # a block around each face's middle, the surface inside it
    for b in range(2):
        y, x = torch.nonzero(batch.mask[b]).float().mean(0).long().tolist()
        y, x = y // 16 * 16, x // 16 * 16
        origin.append([int(batch.depth[b, y + 8, x + 8] - 8), y, x])
    origin = torch.tensor(origin)
    blocks = targets.occupancy(2, sample, origin)
    for i in range(2):
        k, y, x = origin[i].tolist()
        expected = dense[sample[i], k : k + 16, y : y + 16, x : x + 16]
        inside = batch.mask[sample[i], y : y + 16, x : x + 16].all()
        assert inside and (blocks[i] - expected).abs().max() < 0.15 and (blocks[i] - expected).abs().mean() < 0.01  # depths: 2×2 means of the fine map
    # The level-3 block at twice the corner covers the first 8³ of the level-2 block: in each column,
    # the full depth it holds (half-pixel voxels) is the coarse block's there.
    fine = targets.occupancy(3, sample, 2 * origin)
    difference = fine.sum(1)[:, ::2, ::2] / 2 - blocks[:, :8].sum(1)[:, :8, :8]
    assert difference.abs().mean() < 0.15 and difference.abs().max() < 1.5


def test_blocks_read_their_parents_and_start_from_the_dense_prior():
    from facevox.hsp_net import BLOCK, CROP, SPAN

    net = tiny_net(input_size=64, volume_depth=64).eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        decoded = net.trunk(image)
        coarse, levels = net.hierarchy(decoded, threshold=-1.0)  # refine everything
    grids = net.grids
    assert grids == [16, 32, 64, 128]
    assert [len(b.sample) for b in levels] == [2 * 8, 2 * 64, 2 * 512]  # every octant
    for level, blocks in enumerate(levels, start=1):
        last = level == len(levels)  # the last level predicts its core and the voxel in front of it alone
        assert blocks.occupancy.shape == (len(blocks.sample), 1) + ((BLOCK + 1, BLOCK, BLOCK) if last else (SPAN,) * 3)
        assert blocks.core(blocks.occupancy).shape == (len(blocks.sample), 1, BLOCK, BLOCK, BLOCK)
        assert (blocks.origin % BLOCK == 0).all() and (blocks.origin < grids[level]).all()
        assert len({tuple(o) for o in torch.cat([blocks.sample[:, None], blocks.origin], 1).tolist()}) == len(blocks.sample)
    assert levels[0].classes.shape[1:] == (3, SPAN, SPAN, SPAN) and levels[-1].classes is None
    # A fresh head's level-1 occupancy is the dense head's logits averaged onto its grid.
    first = levels[0]
    k, y, x = first.origin[5].tolist()
    dense = net.volume_head(decoded)[first.sample[5], : 64].reshape(32, 2, 32, 32).mean(1)
    assert torch.allclose(first.core(first.occupancy)[5, 0], dense[k : k + 16, y : y + 16, x : x + 16], atol=1e-5)
    assert CROP == 12


def test_a_few_training_steps_lower_the_loss(batch):
    from training.train import config, losses

    net = tiny_net()
    cfg = dict(config, hsp_blocks="8,24,48", freeze_steps=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    history = []
    for _ in range(8):
        torch.manual_seed(1)  # the same blocks every step
        parts = losses(net, batch, cfg)
        assert parts["boundary_blocks1"] >= 0 and {"classes0", "classes1", "classes2", "occupancy3"} <= parts.keys()
        loss = cfg["classes_weight"] * parts["classes"] + cfg["occupancy_weight"] * parts["occupancy"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert np.isfinite(history).all() and history[-1] < 0.8 * history[0]


def test_evaluation_counts_blocks_and_recall(surrey, batch):
    from training.hsp import evaluate_hierarchy

    class Same:
        def sample(self, size, seed):
            return batch

    record = evaluate_hierarchy(tiny_net(), Same(), threshold=-1.0, seed=0, batches=1, batch_size=2, limits=(2, 4, 8))
    assert record["blocks1"] == 2 and record["blocks2"] == 4 and record["blocks3"] == 8
    assert 0 <= record["boundary_recall"] < 0.1 and 0 <= record["block_iou"] <= 1


def test_train_command_starts_from_the_dense_model_and_resumes(tmp_path, monkeypatch, surrey):
    pytest.importorskip("cv2", reason="training needs the [train] extra (OpenCV)")
    from facevox.volume import MODELS_DIR
    from training import train

    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--device", "cpu", "--net", "hsp-hg2-w192", "--batch-size", "1",
            "--warmup-steps", "1", "--eval-every", "100", "--hsp-blocks", "4,8,16", "--freeze-steps", "1",
            "--init-onnx", str(MODELS_DIR / "vrn-hg2-w192.onnx")]
    monkeypatch.setattr(sys, "argv", args + ["--total-steps", "1"])
    train.main()
    state = torch.load(out / "ckpt.pt", weights_only=False)
    from facevox.net import create
    from facevox.torch_volume import from_onnx

    shipped = create("vrn-hg2-w192")
    from_onnx(shipped, MODELS_DIR / "vrn-hg2-w192.onnx")
    frozen = shipped.state_dict()
    # The first step was frozen: the backbone's weights are the shipped ones, the new head moved.
    assert torch.equal(state["model"]["decode.0.weight"], frozen["decode.0.weight"])
    monkeypatch.setattr(sys, "argv", args + ["--total-steps", "2"])
    train.main()
    state = torch.load(out / "ckpt.pt", weights_only=False)
    assert state["step"] == 2 and not torch.equal(state["model"]["decode.0.weight"], frozen["decode.0.weight"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and np.isfinite(log[0]["classes"]) and "samples_per_s" in log[0]

    # The export command writes the graphs the runtime loads, and training can start again from them.
    from facevox.hierarchy import HierarchicalModel
    from training import export_onnx

    onnx_path = tmp_path / "hsp.onnx"
    monkeypatch.setattr(sys, "argv", ["export", str(out / "ckpt.pt"), str(onnx_path)])
    export_onnx.main()
    info = json.loads(onnx_path.with_suffix(".json").read_text())
    shipped_steps = json.loads((MODELS_DIR / "vrn-hg2-w192.json").read_text())["training_steps"]
    assert info["training_steps"] == shipped_steps + 2 and info["hierarchy"]["grids"] == [48, 96, 192, 384]
    assert HierarchicalModel(onnx_path).levels and all((tmp_path / name).exists() for name in info["level_files"])
    again = create("hsp-hg2-w192")
    assert from_onnx(again, onnx_path) == []
    assert torch.equal(again.state_dict()["levels.2.up.weight"], state["model"]["levels.2.up.weight"].float())


def test_a_perfect_head_gives_back_the_surface(batch):
    """The runtime's composition (facevox.hierarchy) on the targets' own hierarchy: the front depth on
    the finest grid is the fine target's, to the interpolation of clipped ramps."""
    from training.hsp import HierarchyTargets, oracle_hierarchy

    targets = HierarchyTargets(batch.depth, batch.mask, [48, 96, 192, 384], 192)
    tree = oracle_hierarchy(targets, 1)
    assert [len(level.origin) for level in tree.levels][-1] > 100
    depth, mask = tree.fine_front_depth()
    truth, truth_mask = targets.fine_depth[1].numpy(), targets.fine_mask[1].numpy()
    assert (mask == truth_mask).mean() > 0.999
    both = mask & truth_mask
    assert np.abs(depth[both] - truth[both]).max() < 0.1  # crop pixels: a fifth of a finest voxel
    crop_depth, crop_mask = tree.front_depth()
    assert (crop_mask == batch.mask[1].numpy()).mean() > 0.999


def test_children_apart_give_the_same_numbers():
    """The export's heads (hsp_net.forward_apart) against training's LevelHead.forward."""
    from facevox.hsp_net import CROP, SPAN, cut_windows, forward_apart, to_children, to_space

    x = torch.randn(2, 3, 6, 8, 4)
    assert torch.equal(to_space(to_children(x, 3, 4, 2), 3, 4, 2), x)
    heads = [*tiny_net().levels, tiny_net(hsp_spatial=0).levels[0]]  # level 1 with its 3×3×3 convolution and without
    for head in heads:
        prior = CROP if head.prior_from_parent else SPAN
        with torch.no_grad():
            for p in head.parameters():
                p.normal_(0, 0.3)
            inputs = torch.randn(3, 4, CROP, CROP, CROP), torch.randn(3, 1, prior, prior, prior), torch.randn(3, 4, CROP, CROP)
            features, occupancy, classes = head(*inputs)
            apart, occupancy_apart, boundary = forward_apart(head, *cut_windows(head, *inputs))
        assert torch.allclose(occupancy, occupancy_apart, atol=1e-5)
        if classes is not None:
            assert torch.allclose(classes.softmax(1)[:, 1, 2:-2, 2:-2, 2:-2], boundary, atol=1e-5)  # its core
            a = SPAN // 2
            assert torch.allclose(to_space(apart, a, a, a), features, atol=1e-5)
