"""Every name studybench writes to MLflow, defined once.

Readers (``report``, ``status``, the runner) and writers (``store.writer``, ``train``) import
these constants; a name spelled anywhere else is a bug. Changing one breaks reading old
stores: add a new name and keep reading the old one instead.
"""

from __future__ import annotations

# ---------------------------------------------------------------- tags of a training run
TAG_STUDY = "studybench.study"
TAG_KEY = "studybench.run_key"
TAG_METHOD = "studybench.method"
TAG_DATASET = "studybench.dataset"
TAG_ARCH = "studybench.arch"
TAG_SEED = "studybench.seed"
#: Params ``seed.init``, ``seed.data``, ``seed.aug``, ``seed.method``: a run's seed of each source
#: (``spec.SOURCES``), logged only when its study gives seeds by source (``seeds: {init: [...], ...}``).
PARAM_SEED_PREFIX = "seed."
TAG_GROUPS = "studybench.groups"  # comma-separated: "main" and/or ablation names
TAG_PHASE = "studybench.phase"  # a tuned study's runs: "tune" (a trial) or "final" (a seed of the chosen setting)
TAG_TRIAL = "studybench.trial"  # a tuning trial's index in its (method, cell) fold; 0 = the configured setting
TAG_SAMPLER = "studybench.sampler"  # how the trial was drawn ("sobol" or "tpe"); on a tune-parent run too
TAG_TUNE_SPLIT = "studybench.tune_split_sha256"  # on a tune-parent run: SHA-256 (16 hex) of the tuning split's ids
TAG_FOLD = "studybench.fold"  # the (method, cell) fold a trial or its parent run belongs to
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: nests a fold's trials under its parent run in the UI
TAG_VERSION = "studybench.version"
TAG_GIT_COMMIT = "studybench.git_commit"
TAG_TORCH = "studybench.torch"
TAG_DEVICE = "studybench.device"
TAG_ERROR = "studybench.error"
TAG_HOST = "studybench.host"
TAG_PID = "studybench.pid"
TAG_HEARTBEAT = "studybench.heartbeat"  # unix time, refreshed while the run is alive
TAG_ATTEMPT = "studybench.attempt"
TAG_RETRY = "studybench.retry"  # why a failed run was (not) retried
TAG_RESUMED_EPOCH = "studybench.resumed_from_epoch"  # epochs a resumed run found done
TAG_RESUMED_RUN = "studybench.resumed_from_run"  # the MLflow run that did them
#: The labels predictions were scored against: ``native`` (the protocol) or ``centre-crop``
#: (``data.eval_on: crop``: resized and centre-cropped labels, a deviation the report flags).
TAG_EVAL_LABELS = "studybench.eval_labels"
EVAL_NATIVE, EVAL_CROP = "native", "centre-crop"
#: The reproducibility switches a run trained under (``train.deterministic``).
TAG_DETERMINISTIC = "studybench.deterministic"
TAG_DETERMINISTIC_ALGORITHMS = "studybench.torch_deterministic_algorithms"
TAG_CUDNN_DETERMINISTIC = "studybench.cudnn_deterministic"
TAG_CUDNN_BENCHMARK = "studybench.cudnn_benchmark"
TAG_CUBLAS_WORKSPACE = "studybench.cublas_workspace_config"
#: The device switches a run trained under (``train.tf32``, ``train.channels_last``, ``train.compile``).
TAG_TF32 = "studybench.tf32"
TAG_CHANNELS_LAST = "studybench.channels_last"
TAG_COMPILE = "studybench.compile"

# ---------------------------------------------------------------- records (manifests, reports)
TAG_KIND = "studybench.kind"  # "manifest" or "report": never a training run
KIND_MANIFEST = "manifest"
KIND_REPORT = "report"
KIND_TUNE_PARENT = "tune-parent"  # folds a (method, cell)'s trials in the UI; holds the chosen setting
TAG_PROFILE = "studybench.profile"  # "" for no profile
TAG_MANIFEST_HASH = "studybench.manifest_sha256"
TAG_STUDY_FILE_HASH = "studybench.study_file_sha256"
TAG_LAST_USED = "studybench.last_used"  # unix time of the latest `run` that recorded the manifest

# ---------------------------------------------------------------- experiments
#: MLflow 3's UI opens an experiment on the view its kind asks for; ours are model training.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

# ---------------------------------------------------------------- params
PARAM_CHOSEN_PREFIX = "chosen."  # on a tune-parent run: the chosen setting, chosen.<dotted knob>
PARAM_AXIS_PREFIX = "axis."  # grid/ablation values that name a run: axis.<dotted key>

# ---------------------------------------------------------------- metrics
METRIC_MIOU = "miou"
METRIC_WALL = "wall_s"
METRIC_TRAIN = "train_s"  # seconds in training epochs (wall clock)
METRIC_EVAL = "eval_s"  # seconds in evaluation passes (wall clock)
METRIC_LOSS_SHARE = "loss_share"  # median loss time / median step time
METRIC_PEAK_MEM = "peak_mem_mb"
METRIC_PARAMS = "params_m"  # parameters of the headline network, millions
METRIC_INFER = "infer_ms_per_image"
METRIC_STEPS = "steps"  # optimiser steps taken
METRIC_IOU_PREFIX = "iou/"  # per-class IoU: iou/<class name>
#: Per-step costs: medians of a run's timed steps (machine noise moves them little, unlike ``wall_s``),
#: their interquartile range within the run, and the memory a run adds to its process.
METRIC_STEP = "step_s"
METRIC_STEP_IQR = "step_s_iqr"
METRIC_LOSS = "loss_ms"
METRIC_LOSS_IQR = "loss_ms_iqr"
METRIC_EXTRA_MEM = "peak_extra_mb"
#: The machine's 1-minute load average when the run started and ended, and the CPUs the run could
#: use: a load above them means the time costs were measured on a busy machine.
METRIC_LOAD_START = "load_start"
METRIC_LOAD_END = "load_end"
METRIC_CPUS = "cpus"
#: Final metrics that depend on the machine and its load, not on what a run computes.
TIMING_METRICS = (
    METRIC_WALL,
    METRIC_TRAIN,
    METRIC_EVAL,
    METRIC_STEP,
    METRIC_STEP_IQR,
    METRIC_LOSS,
    METRIC_LOSS_IQR,
    METRIC_LOSS_SHARE,
    METRIC_PEAK_MEM,
    METRIC_EXTRA_MEM,
    METRIC_INFER,
    METRIC_LOAD_START,
    METRIC_LOAD_END,
)
#: Per-epoch curves (metrics logged with step = epoch): training means, validation metrics of the
#: headline network (``<role>/val/`` for the others), learning rate and epoch time.
CURVE_TRAIN_PREFIX = "train/"
CURVE_VAL_PREFIX = "val/"
CURVE_VAL_MIOU = CURVE_VAL_PREFIX + METRIC_MIOU
CURVE_LR = "lr"
CURVE_EPOCH_TIME = "epoch_s"

# ---------------------------------------------------------------- artifacts
ARTIFACT_SPEC = "spec.yaml"
ARTIFACT_ERROR = "error.txt"
ARTIFACT_SAMPLES = "samples.npz"
ARTIFACT_CONFUSION = "confusion_matrix.csv"
#: Each validation image's confusion counts at the final evaluation (``counts.write_image_counts``):
#: what the report's bootstrap over images resamples. Runs before it have none; those that have it
#: carry ``TAG_IMAGE_COUNTS`` (the number of images), so a report knows without asking per run.
ARTIFACT_IMAGE_COUNTS = "image_counts.npz"
TAG_IMAGE_COUNTS = "studybench.image_counts"
#: The same as images MLflow's UI shows (``run_images``): sample predictions and the row-normalised matrix.
ARTIFACT_SAMPLES_PNG = "samples.png"
ARTIFACT_CONFUSION_PNG = "confusion_matrix.png"
ARTIFACT_MANIFEST = "manifest.json"
ARTIFACT_REPORT_DIR = "report"


def records_experiment(study: str) -> str:
    """The experiment holding a study's manifests and report provenance, beside its runs.

    Kept out of the study's own experiment so that the runs table lists training runs only;
    the space and parentheses cannot occur in a study name, so it never collides with one.
    """
    return f"{study} (studybench records)"
