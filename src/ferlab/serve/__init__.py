"""The web service (`ferlab serve`): a FastAPI app, its micro-batcher, the model it serves, and the webcam page.

- `app`: `create_app(recognizer, ...)`, the HTTP endpoints and their limits.
- `batching`: `MicroBatcher`, one worker that classifies every queued face in one model call.
- `model_info`: which model to serve by default, and what /v1/model says about it.
- `server`: runs the app under uvicorn, loading the model in the background.
- `static/`: the page at `/` (plain HTML and JavaScript, no build step).
"""
