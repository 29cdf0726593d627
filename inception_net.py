"""The Inception v3 networks behind IS, FID and KID, and where their weights come from.

Two networks, picked by `--inception`:
- `tf` (default): the TensorFlow 2015-12-05 graph that the published IS/FID/KID numbers use
  (1008 classes, no aux head, BN eps 1e-3, the FID pooling variants), fed like that graph: uint8
  images, TF1 bilinear resize to 299 x 299 without half-pixel centres, then `(x - 128) / 128`.
  Its state_dict keys are torchvision's `inception_v3(num_classes=1008, aux_logits=False)`, so the
  converted weights `pt_inception-2015-12-05-6726825d.pth` load with `strict=True`.
- `torchvision`: the original code's monitoring network (torchvision's ImageNet weights, ImageNet
  mean/std, PyTorch's align_corners=True resize), kept so that old logs stay comparable.

Both map images (float in [-1, 1] or uint8 in [0, 255], N x 3 x H x W) to `(pool, logits)`:
the 2048-d pool3 features and the class logits (TF: without the FC bias, as IS needs).
Entry points: `build_inception_net`, `resolve_weights`, `load_weights`. The metrics themselves
live in `inception_utils.py`.
"""
import os
import shutil
import sys
import urllib.request
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

from atomic import atomic_write

KINDS = ('tf', 'torchvision')

TF_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                  'pt_inception-2015-12-05-6726825d.pth')
TORCHVISION_WEIGHTS_URL = tv_inception.Inception_V3_Weights.IMAGENET1K_V1.url
WEIGHTS_URLS = {'tf': TF_WEIGHTS_URL, 'torchvision': TORCHVISION_WEIGHTS_URL}

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: an offline machine fails fast, never hangs

# The stages shared by both networks, in order; pool3 is the spatial mean of the last one.
TRUNK = ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'maxpool1', 'Conv2d_3b_1x1',
         'Conv2d_4a_3x3', 'maxpool2', 'Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b',
         'Mixed_6c', 'Mixed_6d', 'Mixed_6e', 'Mixed_7a', 'Mixed_7b', 'Mixed_7c')


def check_kind(kind: str) -> str:
    """Return `kind` if it names a network, else raise a ValueError naming `--inception`."""
    if kind not in KINDS:
        raise ValueError(f'--inception must be one of {", ".join(KINDS)}; got {kind!r}')
    return kind


# --- input images ----------------------------------------------------------------------------

def _check_images(x: torch.Tensor) -> None:
    """Reject anything but N x 3 x H x W uint8 or float images in [-1, 1]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'Inception input must be an N x 3 x H x W image tensor; got {shape}')
    if x.dtype == torch.uint8:
        return
    if not x.is_floating_point():
        raise ValueError(f'Inception input must be uint8 in [0, 255] or float in [-1, 1]; '
                         f'got dtype {x.dtype}')
    if x.numel():
        lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one device sync, not two
        # A little slack for rounding in low precision; NaN fails both comparisons.
        if not (lo >= -1.001 and hi <= 1.001):
            raise ValueError(f'float Inception input must lie in [-1, 1] (uint8 images: pass '
                             f'them as uint8); got values in [{lo:.4g}, {hi:.4g}]')


def to_uint8_values(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 holding the integers 0..255, what the TF graph is fed.

    Float images in [-1, 1] are quantized the way a saved image would be: scaled to [0, 255]
    and rounded half up (torchvision's `save_image` does `x * 255 + 0.5`, then truncates).
    """
    _check_images(x)
    if x.dtype == torch.uint8:
        return x.float()
    return torch.floor(x.float() * 127.5 + 128.0).clamp_(0.0, 255.0)


def to_signed_unit(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [-1, 1], what the original's torchvision wrapper is fed."""
    _check_images(x)
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x.float().clamp(-1.0, 1.0)


# --- TF1 bilinear resize ---------------------------------------------------------------------

def _tf1_source_index(in_size: int, out_size: int, device: torch.device):
    """Per output index: the two source indices and the weight of the second, TF1's legacy rule.

    TF1's ResizeBilinear (align_corners=False) maps output i to source i * in / out, with no
    half-pixel shift, all in float32; the upper neighbour is clamped to the last row/column.
    """
    # float32 division, as TF computes the scale; a double division rounded later may differ.
    scale = np.float32(in_size) / np.float32(out_size)
    src = torch.arange(out_size, dtype=torch.float32, device=device) * torch.tensor(
        scale, dtype=torch.float32, device=device)
    lower = torch.floor(src)
    frac = src - lower
    lower = lower.long().clamp_(max=in_size - 1)
    upper = (lower + 1).clamp_(max=in_size - 1)
    return lower, upper, frac


def resize_bilinear_tf1(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize float N x C x H x W images to `size` like TF1's `ResizeBilinear` (legacy rule).

    The lerps are ordered as TF orders them (columns first, then rows), so on the CPU the
    result matches TF's float32 arithmetic.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return x  # scale 1: every output pixel sits exactly on its source pixel
    y0, y1, fy = _tf1_source_index(in_h, out_h, x.device)
    x0, x1, fx = _tf1_source_index(in_w, out_w, x.device)
    top, bottom = x.index_select(-2, y0), x.index_select(-2, y1)
    fx = fx.view(1, 1, 1, -1)
    top = top.index_select(-1, x0) + (top.index_select(-1, x1) - top.index_select(-1, x0)) * fx
    bottom = (bottom.index_select(-1, x0)
              + (bottom.index_select(-1, x1) - bottom.index_select(-1, x0)) * fx)
    return top + (bottom - top) * fy.view(1, 1, -1, 1)


# --- the TF graph's blocks -------------------------------------------------------------------
# The TF graph pools with 'SAME' padding, whose average divides by the number of real pixels
# under the window (count_include_pad=False); torchvision's blocks count the zero padding.
# Each subclass keeps torchvision's submodules (hence the state_dict keys) and concatenates the
# branches in torchvision's order, which is the graph's order.

def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class TFInceptionA(tv_inception.InceptionA):
    """Mixed_5b/5c/5d: torchvision's InceptionA with the graph's padding-free average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class TFInceptionC(tv_inception.InceptionC):
    """Mixed_6b..6e: torchvision's InceptionC with the graph's padding-free average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        branch_pool = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class TFInceptionE(tv_inception.InceptionE):
    """Mixed_7b (`pool='avg'`, padding-free) and Mixed_7c (`pool='max'`: the graph has a 3 x 3
    max pool there, where torchvision averages)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        assert pool in ('avg', 'max'), pool
        self.pool = _avg_pool_same if pool == 'avg' else _max_pool_same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl),
                                  self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], 1)


def _pool3(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run the shared trunk on a preprocessed 299 x 299 batch; return the N x 2048 pool3."""
    for name in TRUNK:
        x = getattr(net, name)(x)
    return x.mean(dim=(2, 3))


# --- the two networks ------------------------------------------------------------------------

class TFInceptionV3(nn.Module):
    """The TF 2015-12-05 Inception graph (the FID/IS reference), with torchvision's keys.

    forward(images) -> (pool3 N x 2048, logits N x 1008 without the FC bias).
    """

    def __init__(self) -> None:
        super().__init__()
        conv = tv_inception.BasicConv2d  # conv without bias + BN(eps=1e-3) + ReLU, as the graph
        # Attribute order follows torchvision's Inception3, so state_dict key order does too.
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = TFInceptionA(192, pool_features=32)
        self.Mixed_5c = TFInceptionA(256, pool_features=64)
        self.Mixed_5d = TFInceptionA(288, pool_features=64)
        self.Mixed_6a = tv_inception.InceptionB(288)
        self.Mixed_6b = TFInceptionC(768, channels_7x7=128)
        self.Mixed_6c = TFInceptionC(768, channels_7x7=160)
        self.Mixed_6d = TFInceptionC(768, channels_7x7=160)
        self.Mixed_6e = TFInceptionC(768, channels_7x7=192)
        self.Mixed_7a = tv_inception.InceptionD(768)
        self.Mixed_7b = TFInceptionE(1280, pool='avg')
        self.Mixed_7c = TFInceptionE(2048, pool='max')
        # 1008 classes; the bias is stored (the weight file has it) but IS must not use it.
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = resize_bilinear_tf1(to_uint8_values(images), (299, 299))
        x = (x - 128.0) / 128.0
        pool = _pool3(self, x)
        # The improved-GAN IS code multiplies pool3 by the softmax MatMul weights only.
        return pool, pool @ self.fc.weight.t()


class TorchvisionInceptionV3(nn.Module):
    """The original code's monitoring network: torchvision's ImageNet Inception v3 (the
    original's inception_utils.load_inception_net / WrapInception).

    Images in [-1, 1] are mapped to [0, 1], normalized with ImageNet mean/std, then resized to
    299 x 299 (bilinear, align_corners=True) when they are another size.
    forward(images) -> (pool3 N x 2048, logits N x 1000 with bias).
    """

    def __init__(self) -> None:
        super().__init__()
        # aux_logits=True only so that torchvision's weight file loads strictly; never run.
        self.net = tv_inception.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                             init_weights=False)
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = ((to_signed_unit(images) + 1.0) / 2.0 - self.mean) / self.std
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=True)
        pool = _pool3(self.net, x)
        return pool, self.net.fc(pool)  # dropout is the identity in eval mode


def build_inception_net(kind: str = 'tf') -> nn.Module:
    """An untrained network of the given kind (`tf` or `torchvision`), in eval mode."""
    net = TFInceptionV3() if check_kind(kind) == 'tf' else TorchvisionInceptionV3()
    return net.eval().requires_grad_(False)


def weights_target(net: nn.Module) -> nn.Module:
    """The module whose state_dict a weight file holds (torchvision's own net in that mode)."""
    return net.net if isinstance(net, TorchvisionInceptionV3) else net


# --- weights ---------------------------------------------------------------------------------

def cached_weights_path(kind: str) -> str:
    """Where torch.hub keeps the weight file of `kind` ($TORCH_HOME/hub/checkpoints/<file>)."""
    name = os.path.basename(WEIGHTS_URLS[check_kind(kind)])
    return os.path.join(torch.hub.get_dir(), 'checkpoints', name)


def _download(url: str, path: str, timeout: float) -> None:
    """Fetch `url` to `path` atomically (atomic.atomic_write): never half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f'Downloading {url} to {path}', file=sys.stderr)

    def fetch(f) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, f, 1 << 20)
    atomic_write(path, fetch)


def resolve_weights(kind: str = 'tf', weights_path: Optional[str] = None,
                    timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Path of the weight file: `weights_path`, else the torch hub cache, else a download.

    Raises FileNotFoundError naming the file, the URL and where to put it when none of the
    three works; never falls back to other weights.
    """
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f'--inception_weights {weights_path}: no such file')
        return weights_path
    cached = cached_weights_path(kind)
    if os.path.isfile(cached):
        return cached
    url = WEIGHTS_URLS[kind]
    try:
        _download(url, cached, timeout)
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        raise FileNotFoundError(
            f'The {kind} Inception weights {os.path.basename(url)} are not on this machine and '
            f'could not be downloaded ({err}). Download {url} elsewhere and either put it at '
            f'{cached} (the torch hub cache; $TORCH_HOME moves it) or pass '
            f'--inception_weights PATH.') from err
    return cached


def load_weights(net: nn.Module, path: str) -> nn.Module:
    """Load a weight file into `net` strictly; a clear ValueError says which keys do not fit."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise ValueError(f'Inception weights {path}: not a readable PyTorch file ({err})') from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f'Inception weights {path}: expected a state_dict (a dict of tensors); '
                         f'got {type(state).__name__}')
    target = weights_target(net)
    expected = target.state_dict()
    # BN counters are not weights; converted files may lack them and torch fills them in.
    missing = [k for k in expected if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f'{k} {tuple(state[k].shape)} (want {tuple(expected[k].shape)})'
                for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        problems = []
        for what, keys in (('missing', missing), ('unexpected', unexpected),
                           ('wrong shape', reshaped)):
            if keys:
                more = f' and {len(keys) - 5} more' if len(keys) > 5 else ''
                problems.append(f'{what} keys: {", ".join(keys[:5])}{more}')
        kind = 'torchvision' if isinstance(net, TorchvisionInceptionV3) else 'tf'
        raise ValueError(f'Inception weights {path} do not fit the --inception {kind} network '
                         f'(it takes {os.path.basename(WEIGHTS_URLS[kind])}): '
                         + '; '.join(problems))
    target.load_state_dict(state, strict=True)
    return net
