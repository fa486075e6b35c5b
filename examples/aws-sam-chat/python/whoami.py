"""whoami: tell the caller its connection id and how many connections are stored, through
the @connections API (post_to_connection) at https://{domainName}/{stage}."""
import json
import os

import boto3

table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])


def handler(event, context):
    ctx = event["requestContext"]
    connection_id = ctx["connectionId"]
    connected = table.scan(Select="COUNT")["Count"]
    api = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{ctx['domainName']}/{ctx['stage']}",
    )
    answer = {"connectionId": connection_id, "connected": connected}
    api.post_to_connection(ConnectionId=connection_id, Data=json.dumps(answer).encode())
    return {"statusCode": 200, "body": "Sent."}
