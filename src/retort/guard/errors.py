"""OpenAI's error shape, as the gateway answers every refusal and failure."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        json.dumps(error_body(status, message, param, code)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
