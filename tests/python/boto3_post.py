#!/usr/bin/env python3
"""Drives Switchboard's management API with boto3's unmodified `apigatewaymanagementapi`
client (SigV4, endpoint override), as a backend written for AWS would. Run by
tests/boto3.rs against a live gateway and connection; prints one JSON object with what
each call returned.

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; --region must be the
gateway's management.sigv4.region.
"""

import argparse
import json
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint, region, secret):
    session = boto3.session.Session(
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret,
        region_name=region,
    )
    return session.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=5),
    )


def error(exc):
    return {
        "code": exc.response["Error"]["Code"],
        "status": exc.response["ResponseMetadata"]["HTTPStatusCode"],
        "message": exc.response["Error"].get("Message", ""),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="management URL with the stage, e.g. http://127.0.0.1:8081/prod")
    parser.add_argument("--region", required=True)
    parser.add_argument("--connection-id", required=True)
    args = parser.parse_args()
    cid = args.connection_id
    out = {}

    api = client(args.endpoint, args.region, os.environ["AWS_SECRET_ACCESS_KEY"])
    api.post_to_connection(ConnectionId=cid, Data=b"hello from boto3")
    out["post"] = "ok"

    described = api.get_connection(ConnectionId=cid)
    out["get"] = {
        "sourceIp": described["Identity"]["SourceIp"],
        "connectedAt": described["ConnectedAt"].isoformat(),
        "lastActiveAt": described["LastActiveAt"].isoformat(),
    }

    forged = client(args.endpoint, args.region, "not-the-secret-0123456789")
    try:
        forged.post_to_connection(ConnectionId=cid, Data=b"forged")
        out["forged"] = "accepted"
    except ClientError as exc:
        out["forged"] = error(exc)

    wrong_region = client(args.endpoint, "ap-south-1", os.environ["AWS_SECRET_ACCESS_KEY"])
    try:
        wrong_region.get_connection(ConnectionId=cid)
        out["wrong_region"] = "accepted"
    except ClientError as exc:
        out["wrong_region"] = error(exc)

    api.delete_connection(ConnectionId=cid)
    out["delete"] = "ok"

    try:
        api.post_to_connection(ConnectionId=cid, Data=b"too late")
        out["after_delete"] = "accepted"
    except ClientError as exc:
        out["after_delete"] = error(exc)

    print(json.dumps(out))


if __name__ == "__main__":
    main()
