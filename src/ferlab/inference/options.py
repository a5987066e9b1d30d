"""The recognizer's options, defined once: what the CLI's model options, the service, batch and Spark
workers and the Python API load a recognizer with.

    options = RecognizerOptions(model="models/bundle", tta="none")
    recognizer = options.load()                      # EmotionRecognizer.load with these options
    options = RecognizerOptions.from_args(args)      # from the parsed --model/--detector/... (ferlab.cli.common)

The defaults are the library's constants (DEFAULT_DETECTOR, DEFAULT_MAX_PIXELS, DEFAULT_TTA), the same
that EmotionRecognizer.load and the CLI's options default to. The dataclass is frozen and picklable:
batch workers receive it, Spark keys its loaded recognizers by it.
"""

import dataclasses
from dataclasses import dataclass

from ferlab.inference.detect import DEFAULT_DETECTOR
from ferlab.inference.images import DEFAULT_MAX_PIXELS
from ferlab.inference.predict import DEFAULT_TTA, fill_pad_of
from ferlab.inference.sources import DEFAULT_RUNTIME


@dataclass(frozen=True)
class RecognizerOptions:
    """The arguments of EmotionRecognizer.load (model, detector, align, max_pixels, runtime, tta,
    filling_faces for fill_pad), and face_crop, which the scoring loops pass to each predict call."""

    model: str | None = None  # None: the model the rule chooses (ferlab.inference.sources.resolve)
    detector: str = DEFAULT_DETECTOR
    align: bool | None = None  # None: the model's crop contract
    max_pixels: int = DEFAULT_MAX_PIXELS
    runtime: str = DEFAULT_RUNTIME
    tta: str = DEFAULT_TTA
    face_crop: bool = False  # the images already are face crops: no detection
    filling_faces: bool = True  # look again for one face filling an image where none is found

    @classmethod
    def from_args(cls, args, **overrides) -> "RecognizerOptions":
        """The options a command's parsed arguments name (cli.common.model_options and --max-pixels,
        --face-crop where the command has it); an option the command lacks keeps its default."""
        found = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**(found | overrides))

    @property
    def fill_pad(self) -> float:
        """EmotionRecognizer's fill_pad for filling_faces."""
        return fill_pad_of(self.filling_faces)

    def load(self, threads: int | None = None):
        """The EmotionRecognizer; with `threads`, its LiteRT and OpenCV work on that many threads
        (a batch or Spark worker's share of the cores)."""
        import cv2

        from ferlab import litert
        from ferlab.inference.predict import EmotionRecognizer

        if threads:
            litert.set_default_threads(threads)
            cv2.setNumThreads(threads)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our errors say it in one line
        return EmotionRecognizer.load(self.model, self.detector, self.align, self.max_pixels, self.runtime, self.tta, self.fill_pad)
