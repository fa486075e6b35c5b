"""$disconnect: forget the connection's id (DeleteItem on the connections table)."""
import os

import boto3

table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])


def handler(event, context):
    connection_id = event["requestContext"]["connectionId"]
    try:
        table.delete_item(Key={"connectionId": connection_id})
    except Exception as err:  # the sample's shape: report, answer 500
        print(f"DeleteItem failed: {err}")
        return {"statusCode": 500, "body": f"Failed to disconnect: {err}"}
    return {"statusCode": 200, "body": "Disconnected."}
