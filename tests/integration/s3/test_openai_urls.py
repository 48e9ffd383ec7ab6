"""`response_format=url` with the jobs in S3 (moto's server on loopback): the OpenAI client gets
presigned S3 URLs, valid for an hour, that any replica's caller can fetch from S3 itself."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
from PIL import Image

from tests.support.s3_server import S3Server
from tests.support.server import ServerProcess

BUCKET = "thaw-openai-images"


def test_urls_are_presigned_s3_urls(tiny_model: Path, s3: S3Server) -> None:
    s3.client().create_bucket(Bucket=BUCKET)
    server = ServerProcess(
        {
            "THAW_MODEL": str(tiny_model),
            "THAW_JOBS_URL": f"s3://{BUCKET}/images",
            "THAW_MAX_BATCH": "2",
            **s3.env(),
        }
    ).start()
    try:
        server.wait_ready()
        with openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="unused", timeout=60, max_retries=0
        ) as client:
            result = client.images.generate(
                prompt="a harbour",
                n=2,
                size="64x64",
                response_format="url",
                extra_body={"num_inference_steps": 2, "seed": 3},
            )
        assert result.data is not None
        assert [item.model_extra["seed"] for item in result.data] == [3, 4]  # type: ignore[index]
        for item in result.data:
            assert item.url is not None
            assert item.url.startswith(f"{s3.endpoint}/{BUCKET}/images/")
            query = parse_qs(urlsplit(item.url).query)
            assert query["X-Amz-Expires"] == ["3600"]
            fetched = httpx.get(item.url, timeout=30)  # from S3, not from thaw
            assert fetched.status_code == 200
            assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    finally:
        server.stop()
