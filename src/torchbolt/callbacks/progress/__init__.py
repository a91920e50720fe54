from torchbolt.callbacks.progress.progress_bar import ProgressBar
from torchbolt.callbacks.progress.rich_progress import RichProgressBar
from torchbolt.callbacks.progress.tqdm_progress import TQDMProgressBar

__all__ = ["ProgressBar", "RichProgressBar", "TQDMProgressBar"]
