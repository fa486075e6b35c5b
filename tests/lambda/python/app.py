"""Plain AWS Lambda handlers for Python (API Gateway WebSocket events). Nothing here knows
about Switchboard: the same file deploys to AWS as it is."""

import json
import os
import time


def _reply(payload):
    return {"statusCode": 200, "body": json.dumps(payload)}


def echo(event, context):
    """A two-way route: echoes the message's "text" and reports what the context says."""
    message = json.loads(event["body"])
    print(f"python echo handler called: {message['text']}")
    return _reply(
        {
            "echo": message["text"],
            "routeKey": event["requestContext"]["routeKey"],
            "functionName": context.function_name,
            "memoryLimitInMB": context.memory_limit_in_mb,
            "invokedFunctionArn": context.invoked_function_arn,
            "awsRequestId": context.aws_request_id,
            "remainingMs": context.get_remaining_time_in_millis(),
            "eventIsDict": isinstance(event, dict),
            "pid": os.getpid(),
        }
    )


def connect(event, context):
    """$connect: ?deny=1 refuses with 403, ?fail=1 raises, ?sleep=<ms> sleeps first."""
    query = event.get("queryStringParameters") or {}
    if query.get("sleep"):
        time.sleep(int(query["sleep"]) / 1000)
    if query.get("fail"):
        raise RuntimeError("connect handler failed on purpose")
    return {"statusCode": 403 if query.get("deny") else 200}


def throws(event, context):
    raise ValueError("handler failed on purpose")


def sleeps(event, context):
    """Sleeps `sleep` milliseconds first, if asked."""
    message = json.loads(event["body"])
    if message.get("sleep"):
        time.sleep(message["sleep"] / 1000)
    return _reply({"awake": True, "pid": os.getpid()})


def exits(event, context):
    """Exits the process (a crash) if asked."""
    message = json.loads(event["body"])
    if message.get("exit"):
        os._exit(1)
    return _reply({"alive": True, "pid": os.getpid()})
