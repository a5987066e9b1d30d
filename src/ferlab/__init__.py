"""ferlab: reproducible facial-emotion recognition on FER2013.

from ferlab import EmotionRecognizer
faces = EmotionRecognizer.load().predict("photo.jpg")  # the model every tool uses (see ferlab.inference.sources)
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # imported on first use, so that `import ferlab` (and `ferlab --help`) stays instant
    if name in ("EmotionRecognizer", "Face"):
        from ferlab.inference import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'ferlab' has no attribute {name!r}")
