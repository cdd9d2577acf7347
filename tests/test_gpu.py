"""GPU-only checks: they run where CUDA is present and skip elsewhere (CI has no GPU).

The neural extractors and the training loop take CUDA when `pick_device()` finds it; these tests
check that they do, and that the CUDA results agree with the CPU ones within the tolerances the CPU
tests already use (0.999 minimum cosine for the face embedders, as under bf16 on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.device import pick_device
from pipeline.extract.precision import MIN_COSINE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_cuda_is_the_default_device():
    assert pick_device().type == "cuda"


@pytest.mark.parametrize("backbone", ["vggface", "resnet50"])
@pytest.mark.parametrize("bf16", [False, True])
def test_face_embedders_on_cuda_agree_with_the_cpu(backbone, bf16):
    from pipeline.extract import resnet50, vggface
    from pipeline.extract.face_embed import preprocess

    module = vggface if backbone == "vggface" else resnet50
    crops = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    x = preprocess(crops, module.MEAN_RGB)
    net = module.build_network("random", seed=0).eval()
    with torch.inference_mode():
        cpu = net(x).float().numpy()
        net = net.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            gpu = net(x.cuda()).float().cpu().numpy()
    assert _cosine(cpu.reshape(len(crops), -1), gpu.reshape(len(crops), -1)).min() >= MIN_COSINE


def test_wav2vec2_on_cuda_agrees_with_the_cpu():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=192, conv_dim=[64] * 7)).eval()
    audio = torch.randn(2, 16000)
    with torch.inference_mode():
        cpu = model(audio).extract_features.numpy()
        gpu = model.cuda()(audio.cuda()).extract_features.cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3 * np.abs(cpu).max())


def test_training_runs_on_cuda_and_its_model_loads_on_the_cpu(tmp_path):
    from test_train_evaluate import PARAMS, make_segments

    from pipeline.runs.files import MODEL_FILE, load_trained, run_dir
    from pipeline.train.families import train_all

    segments = make_segments()
    params = PARAMS.model_copy(update={"seeds": [0], "epochs": 2})
    summary = train_all(segments, params, tmp_path, device="cuda", progress=False)
    assert summary
    model, info = load_trained(run_dir(tmp_path, "crossmodal", "standard", 0) / MODEL_FILE, device="cpu")
    assert next(model.parameters()).device.type == "cpu" and info["epochs_run"] >= 1
