#!/usr/bin/env python3
"""Runs an AWS Lambda handler, unchanged, as a Switchboard HTTP backend.

Switchboard's `http` integration in `proxy` mode POSTs the same event API Gateway gives a
Lambda function. This adapter imports the handler named by HANDLER (`module.function`,
as in a Lambda configuration), calls it with the event and a Lambda-like context, and
answers with what it returned (`{statusCode, headers, body}`), which Switchboard reads as
a Lambda-proxy response. An exception becomes HTTP 502, as a crashed Lambda does on AWS.

Handlers written for AWS build their callback endpoint from the event:
`https://{requestContext.domainName}/{requestContext.stage}`. On AWS that host serves
both the WebSocket API and the `@connections` API; with Switchboard the management API
has its own listener, so the adapter sets `requestContext.domainName` to CALLBACK_DOMAIN
(the management listener, serving TLS) before the handler sees the event. Nothing in the
handler changes; boto3 signs its calls with SigV4 from the usual AWS_* variables.

Environment:
    HANDLER          module.function of the handler (default app.handler)
    HANDLER_PATH     directory to import the handler from (default: this directory)
    CALLBACK_DOMAIN  host:port of Switchboard's management API (TLS), e.g. gateway:8443
    HOST, PORT       where the adapter listens (default 127.0.0.1:3001)
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_CA_BUNDLE
                     read by boto3 inside the handler, as on Lambda
"""

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LambdaContext:
    """The attributes Lambda handlers commonly read from `context`."""

    def __init__(self, function_name, timeout_ms=29_000):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = "128"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "switchboard"
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler():
    spec = os.environ.get("HANDLER", "app.handler")
    module_name, _, function = spec.rpartition(".")
    sys.path.insert(0, os.environ.get("HANDLER_PATH", os.path.dirname(os.path.abspath(__file__))))
    return spec, getattr(importlib.import_module(module_name), function)


SPEC, HANDLER = load_handler()
CALLBACK_DOMAIN = os.environ.get("CALLBACK_DOMAIN", "")


class Adapter(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            event = json.loads(self.rfile.read(length) or b"{}")
            if CALLBACK_DOMAIN:
                event.setdefault("requestContext", {})["domainName"] = CALLBACK_DOMAIN
            result = HANDLER(event, LambdaContext(SPEC))
            status, body = 200, json.dumps(result if result is not None else {"statusCode": 200})
        except Exception:  # the handler crashed: as Lambda, answer an error
            traceback.print_exc()
            status, body = 502, json.dumps({"message": "handler raised an exception"})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


def main():
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "3001"))
    print(f"adapter: {SPEC} on {host}:{port}, callbacks to {CALLBACK_DOMAIN or '(event domain)'}",
          file=sys.stderr, flush=True)
    ThreadingHTTPServer((host, port), Adapter).serve_forever()


if __name__ == "__main__":
    main()
