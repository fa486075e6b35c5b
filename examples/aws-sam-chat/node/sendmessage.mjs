// sendmessage: post the message's `data` to every stored connection through the
// @connections API; forget the connections that are gone.
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, ScanCommand, DeleteCommand } from '@aws-sdk/lib-dynamodb';
import {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} from '@aws-sdk/client-apigatewaymanagementapi';

const db = DynamoDBDocumentClient.from(new DynamoDBClient({}));
const { TABLE_NAME } = process.env;

export const handler = async (event) => {
  let connections;
  try {
    const scan = await db.send(new ScanCommand({
      TableName: TABLE_NAME,
      ProjectionExpression: 'connectionId',
    }));
    connections = scan.Items ?? [];
  } catch (err) {
    return { statusCode: 500, body: err.stack };
  }

  const { domainName, stage } = event.requestContext;
  const api = new ApiGatewayManagementApiClient({
    apiVersion: '2018-11-29',
    endpoint: `https://${domainName}/${stage}`,
  });

  const data = JSON.parse(event.body).data;
  const posts = connections.map(async ({ connectionId }) => {
    try {
      await api.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: data }));
    } catch (err) {
      if (err.name === 'GoneException') {
        console.log(`Found stale connection, deleting ${connectionId}`);
        await db.send(new DeleteCommand({ TableName: TABLE_NAME, Key: { connectionId } }));
      } else {
        throw err;
      }
    }
  });

  try {
    await Promise.all(posts);
  } catch (err) {
    return { statusCode: 500, body: err.stack };
  }
  return { statusCode: 200, body: 'Data sent.' };
};
