"""The flag table: one row per flag of train.py and sample.py, the one place a flag is declared.

A row gives the name, type, default and help; who reads the value (`use`: G, D, both nets, every
G or D residual block, training, sampling, data, metrics or the run itself); its choices or
limits; and the token it adds to the experiment name. utils.py builds the parser, the checks
(`utils.check_row`) and the experiment name from the rows; the models map a config onto their
keyword arguments with `model_arguments`; the tests take their mapping from here too. Every flag
of the original keeps its name, type, default and meaning, so the original launch scripts run
unchanged.

Choice lists live next to what implements them (`layers.ACTIVATIONS`, `losses.LOSSES`, ...) and
are read when needed (`From`), so importing this module imports nothing of the project.
"""
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union


@dataclass(frozen=True)
class From:
    """A choice list kept next to what implements it (`From('losses', 'LOSSES')`), read when
    needed, so that importing this module loads no model code."""
    module: str
    name: str

    def resolve(self):
        return getattr(importlib.import_module(self.module), self.name)


FLAG, OFF = 'flag', 'off'  # store_true and store_false kinds
USES = {  # who reads a flag: its --help section
    'data': 'data and loading', 'G': 'generator', 'D': 'discriminator', 'GD': 'both networks',
    'G_block': 'every G residual block', 'D_block': 'every D residual block',
    'train': 'training', 'metrics': 'IS / FID / KID', 'sample': 'sampling', 'run': 'the run'}
LIMITS: Dict[str, Callable[[Any], bool]] = {
    '>= 1': lambda v: v >= 1, '>= 0': lambda v: v >= 0, '>= -1': lambda v: v >= -1,
    '> 0': lambda v: v > 0, 'in (0, 1]': lambda v: 0 < v <= 1,
    'in [0, 1)': lambda v: 0 <= v < 1, 'in [0, 1]': lambda v: 0 <= v <= 1}
ALWAYS = 'always'  # `when` of a name token that every experiment name has


@dataclass(frozen=True)
class Flag:
    """One row of the flag table.

    kind: a type, FLAG (store_true) or OFF (store_false into `dest`); either is also switched
    back by its `opposite` option. use: a key of USES.
    arg: the models' keyword when it is not the flag's name (--G_nl -> G_activation).
    choices: the valid values (a tuple, a dict's keys, or From(...)); check: From(...) naming a
    function that raises ValueError instead. limits: a key of LIMITS (None is always allowed).
    tag: the experiment-name token, a printf format of the value; `when` says when it is added:
    'set' (the value differs from the default), ALWAYS, or a predicate of the value.
    """
    name: str
    kind: Any
    default: Any
    help: str
    use: str
    dest: Optional[str] = None
    arg: Optional[str] = None
    choices: Union[None, tuple, From] = None
    check: Optional[From] = None
    limits: Optional[str] = None
    tag: Optional[str] = None
    when: Union[str, Callable[[Any], bool]] = 'set'

    @property
    def key(self) -> str:
        """The config key: `dest`, else the name."""
        return self.dest or self.name

    def token(self, value) -> Optional[str]:
        """This flag's experiment-name token for `value`, or None."""
        if self.when == 'set':
            wanted = value != self.default
        else:
            wanted = self.when == ALWAYS or self.when(value)
        if not (self.tag and wanted):
            return None
        return self.tag % value if '%' in self.tag else self.tag


F = Flag


def opposite(name: str) -> str:
    """The option that switches an on/off flag back (FLAG or OFF kind): --no_X for --X, and --X
    for --no_X (--no_fid -> --fid). The last of the two on a command line wins, so a launch
    script's flag is undone by appending the opposite."""
    return name[3:] if name.startswith('no_') else f'no_{name}'


MODELS = ('BigGAN', 'BigGANdeep')  # the model modules (--model)
ACTIVATIONS = From('layers', 'ACTIVATIONS')
INITS = From('layers', 'INIT_STYLES')
PARAMETERIZATIONS = From('layers', 'PARAMETERIZATIONS')

# The original's 90 flags, in its parser's order, with its names, types, defaults and meanings.
ORIGINAL_FLAGS = [
    F('dataset', str, 'I128_hdf5', 'dataset name (ImageFolder / HDF5 for your own data)', 'data',
      choices=From('datasets', 'DATASET_NAMES'), tag='%s', when=ALWAYS),
    F('augment', FLAG, False, 'random crop and flip augmentation (image folders, CIFAR)', 'data'),
    F('num_workers', int, 8, 'DataLoader workers', 'data', limits='>= 0'),
    F('no_pin_memory', OFF, True, 'do not pin DataLoader memory', 'data', dest='pin_memory'),
    F('shuffle', FLAG, False, 'shuffle the data every epoch', 'data'),
    F('load_in_mem', FLAG, False, 'load the whole dataset into RAM', 'data'),
    F('use_multiepoch_sampler', FLAG, False,
      'one sampler for all epochs (resumes at the exact batch)', 'data'),
    F('model', str, 'BigGAN', 'model family', 'run', choices=MODELS, tag='%s'),
    F('G_param', str, 'SN', 'G parameterization: SN, or SVD/none for plain layers', 'G',
      choices=PARAMETERIZATIONS, tag='G%s'),
    F('D_param', str, 'SN', 'D parameterization: SN, or SVD/none for plain layers', 'D',
      choices=PARAMETERIZATIONS, tag='D%s'),
    F('G_ch', int, 64, 'G channel multiplier', 'G', limits='>= 1', tag='Gch%d', when=ALWAYS),
    F('D_ch', int, 64, 'D channel multiplier', 'D', limits='>= 1', tag='Dch%d', when=ALWAYS),
    F('G_depth', int, 1, 'resblocks per stage in G (BigGANdeep)', 'G', limits='>= 1',
      tag='Gd%d'),
    F('D_depth', int, 1, 'resblocks per stage in D (BigGANdeep)', 'D', limits='>= 1',
      tag='Dd%d'),
    F('D_thin', OFF, True, 'SN-GAN channel pattern in D (hidden = in_channels)', 'D',
      dest='D_wide'),
    F('G_shared', FLAG, False, 'shared class embedding in G', 'G', tag='Gshared'),
    F('shared_dim', int, 0, 'shared embedding size (0: dim_z)', 'G', limits='>= 0'),
    F('dim_z', int, 128, 'noise size (with --hier, rounded down to a multiple of the chunks)',
      'G', limits='>= 1'),
    F('z_var', float, 1.0, 'standard deviation of z in sample.py (named "var" by the original)',
      'sample', limits='> 0'),
    F('hier', FLAG, False, 'hierarchical z (needs --G_shared)', 'G', tag='hier'),
    F('cross_replica', FLAG, False, 'cross-replica (synchronized) BN in G across processes',
      'G', tag='cr'),
    F('mybn', FLAG, False, 'BN with standing statistics in G', 'G'),
    F('G_nl', str, 'relu', 'G activation', 'G', arg='G_activation', choices=ACTIVATIONS,
      tag='Gnl%s', when=ALWAYS),
    F('D_nl', str, 'relu', 'D activation', 'D', arg='D_activation', choices=ACTIVATIONS,
      tag='Dnl%s', when=ALWAYS),
    F('G_attn', str, '64', "G self-attention resolutions, e.g. '64' or '32_64'; '0' for none",
      'G', tag='Gattn%s', when=lambda v: v != '0'),
    F('D_attn', str, '64', "D self-attention resolutions, e.g. '64'; '0' for none", 'D',
      tag='Dattn%s', when=lambda v: v != '0'),
    F('norm_style', str, 'bn', "G ccbn normalizer (or 'gn_ch_<N>', 'gn_grp_<N>')", 'G',
      choices=From('layers', 'NORM_STYLES'), check=From('layers', 'check_norm_style'),
      tag='%s'),
    F('seed', int, 0, 'random seed', 'run', tag='seed%d', when=ALWAYS),
    F('G_init', str, 'ortho', 'G init', 'G', choices=INITS, tag='Ginit%s', when=ALWAYS),
    F('D_init', str, 'ortho', 'D init', 'D', choices=INITS, tag='Dinit%s', when=ALWAYS),
    F('skip_init', FLAG, False, 'skip weight init (forced by --resume)', 'GD'),
    F('G_lr', float, 5e-5, 'G learning rate', 'train', limits='> 0', tag='Glr%2.1e',
      when=ALWAYS),
    F('D_lr', float, 2e-4, 'D learning rate', 'train', limits='> 0', tag='Dlr%2.1e',
      when=ALWAYS),
    F('G_B1', float, 0.0, 'G Adam beta1', 'train', limits='in [0, 1)', tag='GB%3.3f'),
    F('D_B1', float, 0.0, 'D Adam beta1', 'train', limits='in [0, 1)', tag='DB%3.3f'),
    F('G_B2', float, 0.999, 'G Adam beta2', 'train', limits='in [0, 1)', tag='GBB%3.3f'),
    F('D_B2', float, 0.999, 'D Adam beta2', 'train', limits='in [0, 1)', tag='DBB%3.3f'),
    F('adam_eps', float, 1e-8, 'Adam epsilon (both nets)', 'train', limits='> 0'),
    F('batch_size', int, 64, 'batch size (per process, per D step and accumulation)', 'train',
      limits='>= 1', tag='bs%d', when=ALWAYS),
    F('G_batch_size', int, 0, 'G batch size (effective: max(G_batch_size, batch_size))',
      'train', limits='>= 0'),
    F('num_G_accumulations', int, 1, 'G gradient accumulations per G step', 'train',
      limits='>= 1', tag='nGa%d'),
    F('num_D_steps', int, 2, 'D steps per G step', 'train', limits='>= 1', tag='nDs%d',
      when=lambda v: v > 1),
    F('num_D_accumulations', int, 1, 'D gradient accumulations per D step', 'train',
      limits='>= 1', tag='nDa%d'),
    F('split_D', FLAG, False, 'run D on fakes and reals separately', 'train'),
    F('num_epochs', int, 100, 'number of epochs', 'train'),
    F('parallel', FLAG, False, 'use all visible GPUs of this process (see docs/performance.md)',
      'run'),
    F('G_fp16', FLAG, False, 'half precision for G (now: --amp fp16)', 'train', tag='Gfp16'),
    F('D_fp16', FLAG, False, 'half precision for D (now: --amp fp16)', 'train', tag='Dfp16'),
    F('D_mixed_precision', FLAG, False, 'mixed precision for D (now: --amp fp16)', 'train'),
    F('G_mixed_precision', FLAG, False, 'mixed precision for G (now: --amp fp16)', 'train'),
    F('accumulate_stats', FLAG, False, 'standing statistics before saving and testing', 'train'),
    F('num_standing_accumulations', int, 16, 'forward passes for standing statistics', 'train',
      limits='>= 1'),
    F('G_eval_mode', FLAG, False, 'G in eval mode for sampling and testing', 'train'),
    F('save_every', int, 2000, 'save a checkpoint and sample sheets every N iterations', 'run',
      limits='>= 1'),
    F('num_save_copies', int, 2, 'rotating checkpoint copies copy0.. (0: none)', 'run',
      limits='>= 0'),
    F('num_best_copies', int, 2, 'rotating best checkpoints best0..', 'run', limits='>= 1'),
    F('which_best', str, 'IS', 'metric that decides the best checkpoints', 'metrics',
      choices=('IS', 'FID')),
    F('no_fid', FLAG, False, 'compute IS only (FID reported as 9999.0)', 'metrics'),
    F('test_every', int, 5000, 'compute IS/FID every N iterations', 'run', limits='>= 1'),
    F('num_inception_images', int, 50000, 'generated images for IS/FID', 'metrics',
      limits='>= 1'),
    F('hashname', FLAG, False, 'name the experiment by a stable hash of its config', 'run'),
    F('base_root', str, '', 'if set, the default root for data, weights, logs and samples',
      'run'),
    F('data_root', str, 'data', 'dataset folder (or file for --dataset HDF5)', 'data'),
    F('weights_root', str, 'weights', 'checkpoint folder', 'run'),
    F('logs_root', str, 'logs', 'log folder', 'run'),
    F('samples_root', str, 'samples', 'sample image folder', 'run'),
    F('pbar', str, 'mine', "progress display (mine: the original's)", 'run',
      choices=('mine', 'tqdm', 'none')),
    F('name_suffix', str, '', 'suffix appended to the experiment name', 'run', tag='%s'),
    F('experiment_name', str, '', 'experiment name (default: built from the config)', 'run'),
    F('config_from_name', FLAG, False,
      "sample.py: take the saved experiment's config (flags given here still win)", 'sample'),
    F('logstyle', str, '%3.3e', 'printf format of the training logs', 'run'),
    F('log_G_spectra', FLAG, False, 'unused, kept for compatibility', 'run'),
    F('log_D_spectra', FLAG, False, 'unused, kept for compatibility', 'run'),
    F('sv_log_interval', int, 10, 'log singular values every N iterations (<= 0: never)', 'run'),
    F('ema', FLAG, False, 'keep an exponential moving average of G (G_ema)', 'train',
      tag='ema'),
    F('ema_decay', float, 0.9999, 'EMA decay', 'train', limits='in [0, 1]'),
    F('use_ema', FLAG, False, 'sample and test with G_ema', 'train'),
    F('ema_start', int, 0, 'iteration at which the EMA starts averaging', 'train',
      limits='>= 0'),
    F('BN_eps', float, 1e-5, "eps of G's class-conditional BN", 'G', limits='> 0'),
    F('SN_eps', float, 1e-8, 'eps of the spectral-norm power iteration', 'GD', limits='> 0'),
    F('num_G_SVs', int, 1, 'singular values tracked per SN layer in G', 'G', limits='>= 1'),
    F('num_D_SVs', int, 1, 'singular values tracked per SN layer in D', 'D', limits='>= 1'),
    F('num_G_SV_itrs', int, 1, 'power iterations per forward in G', 'G', limits='>= 1'),
    F('num_D_SV_itrs', int, 1, 'power iterations per forward in D', 'D', limits='>= 1'),
    F('G_ortho', float, 0.0, 'modified orthogonal regularization strength for G (paper: 1e-4)',
      'train', limits='>= 0', tag='Gortho%2.1e'),
    F('D_ortho', float, 0.0, 'modified orthogonal regularization strength for D', 'train',
      limits='>= 0', tag='Dortho%2.1e'),
    F('toggle_grads', FLAG, True, 'freeze the net not being trained (default on)', 'train'),
    F('which_train_fn', str, 'GAN', 'training function (dummy: to time the data)', 'train',
      choices=('GAN', 'dummy'), tag='Big%s', when=ALWAYS),
    F('load_weights', str, '', 'checkpoint suffix to load, e.g. copy0 or best3', 'run'),
    F('resume', FLAG, False, 'resume the experiment from its checkpoint', 'run'),
]

# The original's eight sample.py flags.
SAMPLE_FLAGS = [
    F('sample_npz', FLAG, False, 'save sample_num_npz samples to samples.npz', 'sample'),
    F('sample_num_npz', int, 50000, 'number of samples in samples.npz', 'sample', limits='>= 1'),
    F('sample_sheets', FLAG, False, 'write class-conditional sample sheets', 'sample'),
    F('sample_interps', FLAG, False, 'write interpolation sheets', 'sample'),
    F('sample_sheet_folder_num', int, -1, 'folder number for sheets and interpolations',
      'sample'),
    F('sample_random', FLAG, False, 'write one random sample sheet', 'sample'),
    F('sample_trunc_curves', str, '', 'truncation sweep start_step_end, e.g. 0.2_0.1_1.0',
      'sample'),
    F('sample_inception_metrics', FLAG, False, 'compute IS/FID once', 'sample'),
]

# Flags this project adds (documented in docs/training.md and the other docs/ pages).
NEW_FLAGS = [
    F('no_toggle_grads', OFF, True, 'do not freeze the net not being trained', 'train',
      dest='toggle_grads'),
    F('sheet_classes', int, -1, 'classes drawn in the class sheets at each save: the first N '
      '(0: all; -1: all, or the first 100 on the CPU, where 1000 take many minutes)', 'train',
      limits='>= -1'),
    F('overwrite', FLAG, False, 'start the experiment again from scratch even though its folder '
      'holds a checkpoint (without it, such a start is refused: add --resume to continue)',
      'run'),
    F('num_iters', int, 0, 'stop when the iteration counter reaches N (across resumes; 0: run '
      'num_epochs)', 'train', limits='>= 0'),
    F('time_limit', float, 0.0, 'stop (and save) after M minutes of training, e.g. before a '
      "cluster job's wall-time limit (0: none)", 'train', limits='>= 0'),
    F('save_on_signal', str, 'TERM,HUP,USR1', 'signals that end training after the current '
      'iteration with a checkpoint, exit status 128 + the signal (a cluster\'s warning before it '
      "kills a job, e.g. SLURM's --signal=USR1@120); a comma-separated list of TERM, HUP, USR1, "
      "USR2, QUIT, XCPU, or 'none'", 'run', check=From('preemption', 'check')),
    F('loss', str, 'hinge', 'GAN loss', 'train', choices=From('losses', 'LOSSES')),
    F('unconditional', FLAG, False, 'train without labels: every image is of one class (a '
      'flat --dataset ImageFolder folder is one class anyway)', 'data', tag='uncond'),
    F('finetune_from', str, '', "start a new run from these weights: a weights folder (ours or "
      "the original's, with G.pth and D.pth), a pretrained folder (config.json + *.safetensors) "
      "or a G state_dict file. A folder's saved config gives the architecture flags not given "
      'here; every tensor is copied but the class embeddings, which are re-initialized (see '
      '--class_map, --finetune_partial)', 'run'),
    F('finetune_partial', FLAG, False, 'with --finetune_from: start even when tensors other than '
      "the class rows cannot be copied (the architectures differ); they start from their "
      'initialization. Without it such a start is refused, naming the tensors', 'run'),
    F('class_map', str, '', 'with --finetune_from: a JSON list (or object) giving the source '
      'class whose embedding rows each new class keeps', 'run'),
    F('freeze_G', int, 0, 'keep the first N residual blocks of G (next to z) fixed', 'train',
      limits='>= 0', tag='freezeG%d'),
    F('freeze_D', int, 0, 'keep the first N residual blocks of D (next to the image) fixed',
      'train', limits='>= 0', tag='freezeD%d'),
    F('resolution', int, 0, 'image size for --dataset ImageFolder / HDF5 (0: from the dataset)',
      'GD', limits='>= 0'),
    F('G_block', str, '', "G residual block, by name ('': the model's own)", 'G',
      choices=From('layers', 'G_BLOCKS'), tag='Gblock%s'),
    F('D_block', str, '', "D residual block, by name ('': the model's own)", 'D',
      choices=From('layers', 'D_BLOCKS'), tag='Dblock%s'),
    F('G_output_eps', float, 1e-5, "eps of G's output-layer BN (the original fixes 1e-5 whatever "
      "--BN_eps says; TF-Hub's modules use 1e-4)", 'G', limits='> 0', tag='Goeps%g'),
    F('device', str, 'auto', 'auto (cuda when available), cpu, cuda or cuda:N', 'run'),
    F('inception', str, 'tf', "Inception for IS/FID (tf: TF-exact, the numbers to report; "
      "torchvision: the original's monitoring net)", 'metrics',
      choices=From('inception_net', 'KINDS')),
    F('inception_weights', str, '', 'path of the Inception weights (default: torch hub cache)',
      'metrics'),
    F('moments_path', str, '', 'dataset Inception moments file (default: <dataset>_inception_'
      'moments.npz)', 'metrics'),
    F('use_kid', FLAG, False, 'also compute KID at each test (the moments file must hold KID '
      'features)', 'metrics'),
    F('fmnist_scorer', FLAG, False, 'FMNIST only: at each test, score with a small Fashion-MNIST '
      'classifier (class accuracy and FID in its feature space, fmnist_scorer.py) instead of '
      'Inception IS / FID; offline, no weights to download', 'metrics'),
    F('use_prdc', FLAG, False, 'also compute precision / recall (k = 3) and density / coverage '
      '(k = 5) at each test, against the real features of the moments file', 'metrics'),
    F('use_intra_fid', FLAG, False, 'also compute intra-class FID (the mean over the classes '
      "sampled of each class's FID against its real moments) at each test; the moments file "
      'must hold per-class moments (calculate_inception_moments.py --per_class_moments)',
      'metrics'),
    # Speed (docs/performance.md)
    F('amp', str, 'none', 'mixed precision (fp16: CUDA only, with loss scaling); SN, BN '
      'statistics, softmax and losses stay float32', 'train',
      choices=From('train_fns', 'AMP_DTYPES')),
    F('channels_last', FLAG, False, 'channels-last layout for G, D and the images', 'train'),
    F('compile', FLAG, False, 'torch.compile the G and D training forwards (slow first steps)',
      'train'),
    F('compile_mode', str, 'default', 'torch.compile mode (reduce-overhead: CUDA graphs)',
      'train', choices=('default', 'reduce-overhead', 'max-autotune')),
    F('deterministic', FLAG, False, 'on CUDA: float32 matmuls and convolutions without TF32, '
      'deterministic cuDNN algorithms and no autotuning (slower, reproducible)', 'train'),
    F('log_every', int, 1, 'read the training losses back from the device every N iterations '
      '(every iteration is still logged; N > 1 saves a wait per step)', 'train', limits='>= 1'),
    # Limited data (docs/data_efficient.md): all off by default
    F('data_fraction', float, 1.0, 'train on this fraction of the data: a class-balanced subset '
      'drawn with --subset_seed, the same images on every resume and rank', 'data',
      limits='in (0, 1]', tag='frac%g'),
    F('num_samples', int, 0, 'train on N images of the data (0: all): a class-balanced subset '
      'drawn with --subset_seed, like --data_fraction', 'data', limits='>= 0', tag='n%d'),
    F('subset_seed', int, 0, 'seed of the --data_fraction / --num_samples subset', 'data',
      limits='>= 0', tag='sseed%d'),
    F('mirror_augment', FLAG, False, 'mirror each real image left to right with probability '
      '1/2, on the device (any data set, HDF5 too)', 'data', tag='mirror'),
    F('DiffAugment', str, '', "differentiable augmentation of every image D sees, reals and "
      "fakes, in D's and G's steps: a comma list of color, translation, cutout (e.g. "
      "'translation,cutout', the paper's BigGAN policy)", 'train',
      check=From('augment', 'check_policy'), tag='DiffAug-%s'),
    F('ADA', FLAG, False, "adaptive augmentation (Karras et al. 2020): flips, quarter turns, "
      "translation, colour and cutout, each with probability p, which follows D's sign on the "
      'reals (--ADA_target)', 'train', tag='ADA'),
    F('ADA_target', float, 0.6, "--ADA: the target of E[sign(D(reals))]", 'train',
      limits='in [0, 1]'),
    F('ADA_interval', int, 4, '--ADA: iterations between updates of p', 'train', limits='>= 1'),
    F('ADA_kimg', float, 500.0, '--ADA: thousands of real images over which p can move from 0 '
      'to 1', 'train', limits='> 0'),
    F('LeCam', float, 0.0, "LeCam regularization weight (Tseng et al. 2021; their BigGAN: "
      "0.3): D's outputs against moving averages of its outputs on reals and fakes", 'train',
      limits='>= 0', tag='LeCam%g'),
    F('LeCam_decay', float, 0.99, "--LeCam: decay of the moving averages", 'train',
      limits='in [0, 1)'),
    F('LeCam_start', int, 1000, "--LeCam: the averages copy the last batch's means before "
      'this iteration and average from it on; the term counts after it', 'train',
      limits='>= 0'),
    F('CR', float, 0.0, "consistency regularization weight (Zhang et al. 2020; paper: 10): D's "
      'outputs on reals against reals flipped and shifted', 'train', limits='>= 0',
      tag='CR%g'),
    F('bCR_real', float, 0.0, 'balanced CR (Zhao et al. 2021; paper: 10): the term on reals '
      '(the same as --CR)', 'train', limits='>= 0', tag='bCRr%g'),
    F('bCR_fake', float, 0.0, 'balanced CR: the term on fakes (paper: 10)', 'train',
      limits='>= 0', tag='bCRf%g'),
    F('zCR_dis', float, 0.0, "latent CR (Zhao et al. 2021; paper: 5): D's outputs on G(z) "
      'against G(z + dz)', 'train', limits='>= 0', tag='zCRd%g'),
    F('zCR_gen', float, 0.0, "latent CR (paper: 0.5): G is rewarded for G(z + dz) differing "
      'from G(z)', 'train', limits='>= 0', tag='zCRg%g'),
    F('zCR_sigma', float, 0.03, 'latent CR: the standard deviation of dz', 'train',
      limits='> 0'),
    F('topk', FLAG, False, "top-k training (Sinha et al. 2020): G learns from the fakes D "
      'scores highest, k shrinking by --topk_gamma per epoch to --topk_nu of the batch',
      'train', tag='topk'),
    F('topk_gamma', float, 0.99, '--topk: decay of k per epoch', 'train', limits='in (0, 1]'),
    F('topk_nu', float, 0.5, '--topk: the smallest k, as a fraction of the G batch', 'train',
      limits='in (0, 1]'),
    # Run trackers (run_trackers.py): copies of the logs, off by default
    F('tensorboard', FLAG, False, 'also write the logged scalars, the sheets at each save and '
      'the flags as TensorBoard events in <logs_root>/<exp>/tensorboard (needs: pip install '
      'tensorboard)', 'run', check=From('run_trackers', 'need_tensorboard')),
    F('wandb', FLAG, False, 'also log the scalars, sheets and flags to a Weights & Biases run in '
      '<logs_root>/<exp>/wandb, whose id the checkpoint keeps so --resume continues it (needs: '
      'pip install wandb)', 'run', check=From('run_trackers', 'need_wandb')),
    F('wandb_project', str, 'BigGAN', 'W&B project of --wandb', 'run'),
    F('wandb_mode', str, 'offline', 'W&B mode of --wandb (offline: no network, upload later '
      'with `wandb sync <logs_root>/<exp>/wandb/offline-run-*`)', 'run',
      choices=('offline', 'online')),
]

# sample.py's own additions (docs/sampling.md).
SAMPLE_NEW_FLAGS = [
    F('G_weights', str, '', 'sample from this bare G state_dict file (e.g. a TF-Hub conversion; '
      'the flags give the architecture) or pretrained folder (config.json + *.safetensors; '
      'its config.json fills the flags not given) instead of a weights folder', 'sample'),
    F('n_classes', int, 0, 'number of classes for --dataset ImageFolder / HDF5 when neither the '
      'data nor a saved config is at hand (0: from those)', 'GD', limits='>= 0'),
    F('truncation', float, None, "truncated normal z: resample every |z| above this threshold "
      "(the paper's truncation trick; default: none)", 'sample', limits='> 0'),
    F('classes', str, '', "only these classes in sheets and samples, e.g. '1,5,9' (default: "
      "all); interpolation rows draw theirs from these too, unless --interp_classes", 'sample'),
    F('interp_classes', str, '', "the interpolation sheets' rows, one per entry: 'A:B' goes "
      "from class A to B, 'A' stays at A, e.g. '207:208,1' (default: 16 rows of random classes)",
      'sample'),
    F('sample_trunc_sweep', str, 'z_var', "what --sample_trunc_curves varies (z_var: the "
      "original's z std; truncation: the threshold)", 'sample', choices=('z_var', 'truncation')),
]

# Entries of a whole config that are no flags: derived by train.py / sample.py, or left in the
# original's saved configs (its nn.ReLU activations, `no_optim`, older key names).
CONFIG_EXTRAS = frozenset({'classes_per_sheet', 'sample_classes', 'interp_pairs', 'trunc_values',
                           'G_activation', 'D_activation', 'no_optim', 'dataset_root', 'BN_sync'})


def all_rows() -> List[Flag]:
    """Every row of every table, in order (a config key may have two: --toggle_grads and
    --no_toggle_grads)."""
    return ORIGINAL_FLAGS + NEW_FLAGS + SAMPLE_FLAGS + SAMPLE_NEW_FLAGS


def rows() -> Dict[str, Flag]:
    """Every row by its config key (a key with two options, like toggle_grads, keeps the
    first). Read from the tables each time, so rows added at run time count."""
    table: Dict[str, Flag] = {}
    for row in all_rows():
        table.setdefault(row.key, row)
    return table


def choices_of(row: Flag) -> Optional[Sequence]:
    """The row's valid values, read from where they are implemented."""
    choices = row.choices.resolve() if isinstance(row.choices, From) else row.choices
    return None if choices is None else list(choices)


# ------------------------------------------------------------------------------------------------
# Model arguments
# ------------------------------------------------------------------------------------------------

def model_arguments(owner: str, net: str, params: Sequence[str],
                    kwargs: dict) -> Tuple[dict, dict]:
    """Split the keyword arguments given to a model (`net` 'G' or 'D'; `params` its argument
    names), which may be a whole config: a parsed one, or an original `state_dict['config']`.

    Returns (arguments, block flags). Arguments are the model's own keywords, plus flags that
    feed one under another name (--G_nl -> G_activation) when that one is not given. Block
    flags are the rows of `use` G_block / D_block, for the model to bind into its residual
    block. Other flags and config entries are left out, as the original's `**kwargs` did; a key
    that is neither an argument nor a flag is a TypeError naming it, so a typo still fails.
    """
    table = rows()
    args = {key: value for key, value in kwargs.items() if key in params}
    block_flags = {}
    for key, value in kwargs.items():
        row = table.get(key)
        if key in params:
            continue
        if row is None:
            if key in CONFIG_EXTRAS:
                continue
            raise TypeError(f'{owner}() got an unexpected keyword argument {key!r}: it is '
                            f'neither an argument of {owner} nor a flag')
        if row.use == f'{net}_block':
            block_flags[key] = value
        elif (row.use in (net, 'GD') and row.arg in params and row.arg not in kwargs):
            args[row.arg] = value
    return args, block_flags
