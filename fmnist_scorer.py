"""An offline stand-in for IS / FID on Fashion-MNIST: a small classifier trained on the data set.

A CNN (about 0.2M parameters) is trained once on Fashion-MNIST's 60,000 training images in the
form the models see them (3 x 32 x 32 in [-1, 1], see datasets.py) and cached with its test
accuracy and the mean and covariance of its 128 penultimate features over the 10,000 test
images, so scoring needs neither the data nor any download. For a batch of images and the
classes they were meant to show, `Scorer.score` returns:

- `accuracy`: the fraction the classifier puts in their intended class (class fidelity, what IS
  rewards; chance is 0.1);
- `FID`: the Frechet distance between their penultimate features and the test split's (lower is
  better; it needs thousands of images to mean much, like FID: compare sets of equal size);
- `num_images`.

`Scorer.floor()` gives the same numbers for real images (accuracy: the test accuracy; FID: 10,000
training images against the test statistics): what a generator as good as the data would score.

    python scripts/utils/score_fmnist.py --npz samples/EXP/samples.npz   # from sample.py
    python scripts/utils/score_fmnist.py --floor

(the command line, each printing one JSON line), and `train.py --fmnist_scorer`, which logs them
at every --test_every instead of IS / FID (`FMNISTMetrics`). The classifier that ships with the
code (`scripts/utils/fmnist_scorer.pth`) is used where the data files are the ones it was
trained on (Debian's); elsewhere the first call trains it (a few minutes on 2 CPU cores) and
saves it to `<data_root>/fmnist_scorer.pth` (`logs/fmnist_scorer.pth` where the data folder is
not writable), which is looked for first. `--cache` picks another file, `--retrain` ignores the
cached ones. A cache from another version of this code or from other data files is retrained
(one trained with other settings too, where the training options are given). From Python:

    scorer = fmnist_scorer.Scorer()               # loads or trains the classifier
    scorer.score(images, labels)                 # uint8 or [-1, 1] float, N x 3 x 32 x 32
    scorer.score_generator(G, n=10000)           # balanced classes, G in eval mode
"""
import contextlib
import hashlib
import math
import os
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import atomic
import data_sources
import datasets
import inception_metrics
import sampling

# Bump whenever the network, its input or the stored statistics change: a cache with another
# version is retrained rather than misread.
VERSION = 'fmnist-scorer-1 (cnn 16-32-32-64-64, fc 128, pad-2 32x32 RGB in [-1, 1])'
CACHE_NAME = 'fmnist_scorer.pth'
FALLBACK_DIR = 'logs'  # the index cache's fallback too (data_sources.INDEX_FALLBACK_DIR)
# The classifier that ships with the code, trained by `score_fmnist.py --retrain` on Debian's
# dataset-fashion-mnist files: looked for last, so a first demo needs no training. Like any cache
# it is used only where the data files at hand are the ones it was trained on.
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'scripts', 'utils', CACHE_NAME)
N_CLASSES = 10
SIZE = 32
FLOOR_IMAGES = 10000
# Training settings; the cache records them, and a cache made with others is retrained.
DEFAULTS = {'epochs': 8, 'batch_size': 128, 'lr': 0.1, 'weight_decay': 5e-4, 'augment': True,
            'seed': 0, 'max_steps': None}
VALID_IMAGES = ('valid: uint8 N x 3 x 32 x 32 or N x 32 x 32 x 3, or float N x 3 x 32 x 32 in '
                '[-1, 1]')


# --- the classifier --------------------------------------------------------------------------

def _conv(c_in: int, c_out: int) -> list:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class Classifier(nn.Module):
    """Conv-BN-ReLU stages at 32, 16 and 8 pixels, then a 128-wide feature layer.

    `forward` returns (features, logits): the features (post-ReLU, like Inception's pool3) are
    what FID compares.
    """

    def __init__(self, n_classes: int = N_CLASSES, width: int = 16, n_features: int = 128):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            *_conv(3, w), nn.MaxPool2d(2),
            *_conv(w, 2 * w), *_conv(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * w * (SIZE // 8) ** 2, n_features, bias=False),
            nn.BatchNorm1d(n_features), nn.ReLU(inplace=True))
        self.head = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return features, self.head(features)


# --- data ------------------------------------------------------------------------------------

def load_split(data_root: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 1 x 32 x 32 images (padded like data_sources.FashionMNIST) and int64 labels of
    the 'train' or 'test' split."""
    folder = datasets.fmnist_folder(data_root)
    if split == 'train':
        data = data_sources.FashionMNIST(folder)
        return data.images, torch.from_numpy(data.labels)
    if split != 'test':
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    # FashionMNIST reads only the training files; the test split is padded the same way.
    paths = [os.path.join(folder, name) for name in data_sources.FMNIST_FILES[2:]]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'Fashion-MNIST test split: {path!r} not found; '
                                    f'{data_sources.FMNIST_INSTALL_HINT}')
    images = data_sources._read_idx(paths[0], 2051, (28, 28))
    labels = data_sources._read_idx(paths[1], 2049, ())
    if len(images) != len(labels):
        raise ValueError(f'Fashion-MNIST test split in {folder!r}: {len(images)} images but '
                         f'{len(labels)} labels')
    images = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2))))[:, None]
    return images, torch.from_numpy(labels.astype(np.int64))


def data_fingerprint(data_root: str) -> str | None:
    """SHA-1 of the four .gz files, or None where the data is not at hand (then a cache is
    taken as it is: scoring does not need the data)."""
    try:
        folder = datasets.fmnist_folder(data_root)
    except FileNotFoundError:
        return None
    digest = hashlib.sha1()
    for name in data_sources.FMNIST_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def as_model_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x 32 x 32 (C = 1 or 3) -> float N x 3 x 32 x 32 in [-1, 1], as G's output,
    channels-last (the layout the classifier runs in)."""
    x = data_sources.to_unit_range(images_u8).expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last)


def augment(images_u8: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops with 2 pixels of black padding (shifts of up to 2 pixels) and horizontal
    flips of uint8 N x 1 x 32 x 32 images, each image its own."""
    n, pad = len(images_u8), 2
    padded = F.pad(images_u8[:, 0], (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(SIZE))[:, :, None]
    cols = (dx[:, None] + torch.arange(SIZE))[:, None, :]
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None], out.flip(-1), out)[:, None]


# --- training and the cache ------------------------------------------------------------------

def default_cache_paths(data_root: str) -> tuple[list[str], str]:
    """(the files to look for a cache in, in order; the file to write a new one to).

    Looked for: `<data_root>/fmnist_scorer.pth`, `logs/fmnist_scorer.pth` (relative to the
    working directory, as the image index cache), then the shipped classifier (SHIPPED).
    Written: `<data_root>/fmnist_scorer.pth` where that folder is writable, else the logs one."""
    primary = os.path.join(data_root, CACHE_NAME)
    fallback = os.path.join(FALLBACK_DIR, CACHE_NAME)
    writable = os.path.isdir(data_root) and os.access(data_root, os.W_OK)
    return [primary, fallback, SHIPPED], primary if writable else fallback


def _config(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'unknown training option(s) {", ".join(unknown)}; valid: '
                         f'{", ".join(DEFAULTS)}')
    return {**DEFAULTS, **options}


@torch.inference_mode()
def _features(model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
              device: torch.device | str = 'cpu') -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 features, predicted classes) of uint8 N x C x 32 x 32 images, model in eval."""
    feats, preds = [], []
    for start in range(0, len(images), batch_size):
        x = as_model_input(images[start:start + batch_size].to(device))
        f, logits = model(x)
        feats.append(f.double().cpu())
        preds.append(logits.argmax(1).cpu())
    if not feats:
        return (torch.zeros(0, model.head.in_features, dtype=torch.float64),
                torch.zeros(0, dtype=torch.long))
    return torch.cat(feats), torch.cat(preds)


def auto_threads() -> int:
    """Threads for training: the cores this process may use, less those other processes keep
    busy (the 1-minute load average). Convolutions with more threads than free cores slow
    down many times over (their threads wait for each other at every layer): on 2 cores
    already busy, 2 threads trained 6 to 18 times slower than 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(1, min(torch.get_num_threads(), cores - busy))


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` CPU threads (None: auto_threads()); yields the number."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


def train_classifier(data_root: str = 'data', cache: str | None = None, *, save: bool = True,
                     progress: bool = True, threads: int | None = None, **options) -> dict:
    """Train the classifier on the training split and return the cache's content (and write it,
    atomically, to `cache`, by default default_cache_paths' file, unless `save` is False).

    `options` override DEFAULTS: `epochs`, `batch_size`, `lr` (SGD with Nesterov momentum 0.9,
    a linear warm-up over the first 5 % of the steps then a cosine decay to 0), `weight_decay`,
    `augment` (random 2-pixel shifts and horizontal flips), `seed` (initial weights, batch
    order and augmentation; the global RNG is left as it was), `max_steps` (stop early, for
    tests). `threads`: torch's CPU threads while training (None: auto_threads()). `progress`
    prints one line per epoch on stderr.
    """
    config = _config(options)
    start = time.perf_counter()
    train_x, train_y = load_split(data_root, 'train')
    test_x, test_y = load_split(data_root, 'test')
    fingerprint = data_fingerprint(data_root)
    with cpu_threads(threads) as used_threads:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config['seed'])
            model = Classifier().to(memory_format=torch.channels_last)
        generator = torch.Generator().manual_seed(config['seed'])
        _fit(model, train_x, train_y, config, generator, progress)
        model.eval()
        train_seconds = time.perf_counter() - start
        test_feats, test_pred = _features(model, test_x)
        accuracy = float((test_pred == test_y).double().mean())
        mu, sigma = inception_metrics.feature_moments(test_feats)
        # The floor: training images (never the test ones) against the test statistics.
        pick = torch.randperm(len(train_x), generator=generator)[:FLOOR_IMAGES]
        floor_feats, _ = _features(model, train_x[pick])
        floor_mu, floor_sigma = inception_metrics.feature_moments(floor_feats)
        floor_fid = inception_metrics.calculate_frechet_distance(floor_mu, floor_sigma, mu, sigma)
    state = {'version': VERSION, 'config': config, 'data': fingerprint,
             'state_dict': model.state_dict(), 'test_accuracy': accuracy,
             'mu': mu, 'sigma': sigma,
             'floor': {'accuracy': accuracy, 'FID': floor_fid, 'num_images': len(pick)},
             'num_train': len(train_x), 'num_test': len(test_x),
             'train_seconds': train_seconds, 'threads': used_threads}
    if progress:
        print(f'fmnist_scorer: trained in {train_seconds:.0f} s ({used_threads} threads); test '
              f'accuracy {accuracy:.4f}, floor FID {floor_fid:.3f}', file=sys.stderr)
    if save:
        path = cache or default_cache_paths(data_root)[1]
        try:
            save_cache(path, state)
        except OSError as err:  # the scores stand; only the next run trains again
            print(f'fmnist_scorer: warning: could not save the classifier to {path} ({err}); '
                  f'pass --cache to choose a writable file', file=sys.stderr)
    return state


def _fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: dict,
         generator: torch.Generator, progress: bool) -> None:
    n, batch_size = len(images), config['batch_size']
    if n < 2:
        raise ValueError(f'the classifier needs at least 2 training images, got {n}')
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size  # whole batches only: BatchNorm needs more than one row
    total = config['epochs'] * steps_per_epoch
    if config['max_steps'] is not None:
        total = min(total, config['max_steps'])
    if total < 1:
        raise ValueError(f'no training steps: epochs {config["epochs"]}, max_steps '
                         f'{config["max_steps"]}, {n} images in batches of {batch_size}')
    # Weight decay on the conv and linear weights only, not on BN's scales and shifts.
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    optim = torch.optim.SGD([{'params': decay, 'weight_decay': config['weight_decay']},
                             {'params': rest, 'weight_decay': 0.0}],
                            lr=config['lr'], momentum=0.9, nesterov=True)
    warmup = max(1, total // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return config['lr'] * (step + 1) / warmup
        return config['lr'] * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    model.train()
    step, epoch, tick = 0, 0, time.perf_counter()
    while step < total:
        order = torch.randperm(n, generator=generator)
        loss_sum = correct = seen = 0
        for i in range(steps_per_epoch):
            if step >= total:
                break
            index = order[i * batch_size:(i + 1) * batch_size]
            x = images[index]
            if config['augment']:
                x = augment(x, generator)
            y = labels[index]
            for group in optim.param_groups:
                group['lr'] = lr_at(step)
            _, logits = model(as_model_input(x))
            loss = F.cross_entropy(logits, y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            step += 1
        epoch += 1
        if progress:
            print(f'fmnist_scorer: epoch {epoch}, step {step}/{total}: loss '
                  f'{loss_sum / seen:.4f}, train accuracy {correct / seen:.4f}, '
                  f'{time.perf_counter() - tick:.0f} s', file=sys.stderr, flush=True)


def save_cache(path: str, state: dict) -> None:
    """Write the cache atomically (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.atomic_write(path, lambda f: torch.save(state, f))


def load_cache(path: str) -> dict | None:
    """The cache's content, or None where there is none or it cannot be read."""
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # torn, foreign or corrupt: treated as absent and retrained
        return None
    return state if isinstance(state, dict) else None


def _stale(state: dict, config: dict | None, fingerprint: str | None) -> str | None:
    """Why a loaded cache cannot be used, or None when it can (config None: any settings)."""
    if state.get('version') != VERSION:
        return f'made by another version ({state.get("version")!r})'
    if config is not None and state.get('config') != config:
        return f'trained with other settings ({state.get("config")})'
    if fingerprint is not None and state.get('data') != fingerprint:
        return 'made from other data files'
    return None


def load_or_train(data_root: str = 'data', cache: str | None = None, retrain: bool = False,
                  progress: bool = True, threads: int | None = None, **options) -> dict:
    """The cached classifier if a usable cache exists, else a newly trained (and saved) one.

    Usable: made by this VERSION, from the same data files (unless the data is not at hand)
    and, where training `options` are given, with the same settings; without options a cache
    trained with any settings is used (`retrain` replaces it)."""
    config = _config(options)
    candidates, target = ([cache], cache) if cache else default_cache_paths(data_root)
    if not retrain:
        fingerprint = data_fingerprint(data_root)
        for path in candidates:
            state = load_cache(path)
            if state is None:
                continue
            why = _stale(state, config if options else None, fingerprint)
            if why is None:
                return state
            if progress:
                print(f'fmnist_scorer: retraining: the cache {path} was {why}', file=sys.stderr)
    return train_classifier(data_root, target, progress=progress, threads=threads, **config)


# --- scoring ---------------------------------------------------------------------------------

def as_uint8_images(images, what: str = 'images') -> torch.Tensor:
    """uint8 N x 3 x 32 x 32 from uint8 NCHW / NHWC or float NCHW in [-1, 1] (tensor or array).

    Floats are quantized as a saved image (and sample.py's npz) is, so the float images and
    their npz score the same."""
    x = torch.as_tensor(images)
    if x.dim() != 4 or not (x.shape[1:] == (3, SIZE, SIZE) or x.shape[1:] == (SIZE, SIZE, 3)):
        raise ValueError(f'{what}: shape {tuple(x.shape)} ({x.dtype}); {VALID_IMAGES}')
    if x.dtype == torch.uint8:
        return x.permute(0, 3, 1, 2).contiguous() if x.shape[1] != 3 else x
    if not x.is_floating_point() or x.shape[1] != 3:
        raise ValueError(f'{what}: dtype {x.dtype} with shape {tuple(x.shape)}; {VALID_IMAGES}')
    if x.numel():
        low, high = torch.stack(torch.aminmax(x.float())).tolist()
        if not (low >= -1.001 and high <= 1.001):  # slack for low-precision rounding; NaN fails
            raise ValueError(f'{what}: float values in [{low:.4g}, {high:.4g}], not [-1, 1]; '
                             f'{VALID_IMAGES}')
    return sampling.to_uint8(x.detach().float().clamp(-1, 1)).cpu()


def as_labels(labels, n: int, what: str = 'labels') -> torch.Tensor:
    """int64 labels, one per image, each a class 0..9."""
    y = torch.as_tensor(labels)
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f'{what}: dtype {y.dtype}; valid: integer class labels 0..'
                         f'{N_CLASSES - 1}, one per image')
    if y.shape != (n,):
        raise ValueError(f'{what}: shape {tuple(y.shape)} for {n} images; valid: one integer '
                         f'class label 0..{N_CLASSES - 1} per image, shape ({n},)')
    y = y.long().cpu()
    if n and (int(y.min()) < 0 or int(y.max()) >= N_CLASSES):
        raise ValueError(f'{what}: values in [{int(y.min())}, {int(y.max())}]; valid: class '
                         f'labels 0..{N_CLASSES - 1}')
    return y


class Scorer:
    """The Fashion-MNIST classifier, loaded from its cache or trained (see load_or_train).

    `device` runs the classifier there (features are gathered on the CPU in float64);
    `threads`: torch's CPU threads while it trains or scores (None: auto_threads()).
    """

    def __init__(self, data_root: str = 'data', cache: str | None = None, retrain: bool = False,
                 device: torch.device | str = 'cpu', progress: bool = True,
                 threads: int | None = None, **options):
        self.threads = threads
        self.state = load_or_train(data_root, cache, retrain, progress, threads, **options)
        self.device = torch.device(device)
        self.model = Classifier()
        self.model.load_state_dict(self.state['state_dict'])
        # Channels-last: a third faster on CPUs for these small convolutions.
        self.model.eval().to(self.device, memory_format=torch.channels_last)
        self.test_accuracy = float(self.state['test_accuracy'])
        self.mu, self.sigma = self.state['mu'], self.state['sigma']

    def features(self, images, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(float64 N x 128 penultimate features, predicted classes) of the images."""
        with cpu_threads(self.threads):
            return _features(self.model, as_uint8_images(images), batch_size, self.device)

    def score(self, images, labels, batch_size: int = 500) -> dict:
        """{'accuracy', 'FID', 'num_images'} of images meant to show classes `labels`.

        images: uint8 N x 3 x 32 x 32 or N x 32 x 32 x 3, or float N x 3 x 32 x 32 in [-1, 1];
        labels: N integers 0..9. FID needs N >= 2."""
        x = as_uint8_images(images)
        y = as_labels(labels, len(x))
        if len(x) < 2:
            raise ValueError(f'images: {len(x)} image(s); FID needs at least 2 (thousands for '
                             f'a number worth comparing)')
        with cpu_threads(self.threads):
            feats, pred = _features(self.model, x, batch_size, self.device)
        mu, sigma = inception_metrics.feature_moments(feats)
        fid = inception_metrics.calculate_frechet_distance(mu, sigma, self.mu, self.sigma)
        return {'accuracy': float((pred == y).double().mean()), 'FID': fid,
                'num_images': len(x)}

    def floor(self) -> dict:
        """The score of real data: accuracy on the test split (the classifier's test accuracy)
        and the FID of 10,000 training images against the test statistics."""
        return dict(self.state['floor'])

    @torch.no_grad()
    def score_generator(self, G: nn.Module, n: int = 10000, batch_size: int = 500,
                        device: torch.device | str = 'cpu', seed: int = 0) -> dict:
        """Score n images of G (on `device`, in eval mode, restored after): z ~ N(0, I) from a
        NoiseSampler seeded with `seed`, and n // 10 of each class (the remainder spread over
        the first classes) in random order."""
        n_classes = getattr(G, 'n_classes', N_CLASSES)
        if n_classes != N_CLASSES:
            raise ValueError(f'G has {n_classes} classes; Fashion-MNIST has {N_CLASSES}')
        if n < 2:
            raise ValueError(f'n must be at least 2 for FID, got {n}')
        device = torch.device(device)
        sampler = sampling.NoiseSampler(G.dim_z, N_CLASSES, batch_size, device, seed=seed)
        labels = torch.arange(n) % N_CLASSES
        labels = labels[torch.randperm(n, generator=sampler.generator)]
        was_training = G.training
        G.eval()
        try:
            images = []
            for start in range(0, n, batch_size):
                y = labels[start:start + batch_size].to(device)
                z = sampler.sample_z(len(y))
                images.append(sampling.to_uint8(G(z, sampling.class_vectors(G, y)).float())
                              .cpu())
        finally:
            G.train(was_training)
        return self.score(torch.cat(images), labels, batch_size)


class FMNISTMetrics:
    """train.py's test metrics with --fmnist_scorer, in the place of get_inception_metrics:
    `(sample, num_images, num_splits) -> (accuracy, 0.0, FID)` over the images `sample()`
    draws, scored against the labels they were drawn for. Under torch.distributed every
    process draws its share and all score the gathered images, so every rank gets the same
    numbers. `record` names the numbers for the JSONL log and `describe` for the console.
    """

    def __init__(self, data_root: str = 'data', progress: bool = True):
        self.scorer = Scorer(data_root, progress=progress)
        self.last: dict = {}

    def __call__(self, sample, num_inception_images: int, num_splits: int = 10,
                 prints: bool = True, use_torch: bool = True) -> tuple[float, float, float]:
        import distributed
        share = -(-num_inception_images // distributed.world_size())
        images, labels, count = [], [], 0
        while count < share:
            x, y = sample()
            images.append(sampling.to_uint8(x.float()))
            labels.append(y)
            count += len(x)
        x = distributed.all_gather_rows(torch.cat(images)[:share])
        y = distributed.all_gather_rows(torch.cat(labels)[:share])
        scores = self.scorer.score(x.cpu(), y.cpu())
        self.last = {'fmnist_accuracy': scores['accuracy'], 'fmnist_FID': scores['FID'],
                     'num_images': scores['num_images']}
        return scores['accuracy'], 0.0, scores['FID']

    @staticmethod
    def record(accuracy: float, _: float, fid: float) -> dict:
        return {'fmnist_accuracy': float(accuracy), 'fmnist_FID': float(fid)}

    @staticmethod
    def describe(accuracy: float, _: float, fid: float) -> str:
        return f'Fashion-MNIST classifier accuracy is {accuracy:.4f}, classifier FID is {fid:.3f}'
