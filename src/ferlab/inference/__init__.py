"""Using a model: images, face detectors, classifier runtimes, the recogniser, video, explanations."""
