"""``retort serve``: an OpenAI-compatible server over a local model (FastAPI + uvicorn)."""
