"""A chat handler written for AWS API Gateway WebSocket APIs and Lambda, in the style of
AWS's public chat sample (simple-websockets-chat-app): `$connect` remembers the
connection, `sendmessage` posts the message to every remembered connection through the
ApiGatewayManagementApi client of the official AWS SDK, `$disconnect` forgets it.

It is plain AWS code: it runs on Lambda as is, and on Switchboard behind
examples/aws-adapter/adapter.py without a change. (The AWS sample keeps connection ids in
DynamoDB; this one keeps them in the process to need no database.)
"""

import json
import threading

import boto3
from botocore.exceptions import ClientError

connections = set()
lock = threading.Lock()


def handler(event, context):
    route = event["requestContext"]["routeKey"]
    connection_id = event["requestContext"]["connectionId"]
    if route == "$connect":
        with lock:
            connections.add(connection_id)
        return {"statusCode": 200, "body": "Connected."}
    if route == "$disconnect":
        with lock:
            connections.discard(connection_id)
        return {"statusCode": 200, "body": "Disconnected."}
    if route == "sendmessage":
        return send_message(event)
    return {"statusCode": 400, "body": "Unknown route."}


def send_message(event):
    domain = event["requestContext"]["domainName"]
    stage = event["requestContext"]["stage"]
    api = boto3.client("apigatewaymanagementapi", endpoint_url=f"https://{domain}/{stage}")
    data = json.loads(event["body"])["data"]
    with lock:
        targets = list(connections)
    for target in targets:
        try:
            api.post_to_connection(ConnectionId=target, Data=data.encode())
        except ClientError as error:
            if error.response["Error"]["Code"] == "GoneException":
                with lock:
                    connections.discard(target)  # stale: forget it
            else:
                raise
    return {"statusCode": 200, "body": "Data sent."}
