"""Baseline: the floor for listening. A FastAPI app with one health route and nothing else."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "alive"}
