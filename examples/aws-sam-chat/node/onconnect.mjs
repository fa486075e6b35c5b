// $connect: remember the new connection's id in the connections table.
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';

const db = DynamoDBDocumentClient.from(new DynamoDBClient({}));

export const handler = async (event) => {
  try {
    await db.send(new PutCommand({
      TableName: process.env.TABLE_NAME,
      Item: { connectionId: event.requestContext.connectionId },
    }));
  } catch (err) {
    console.error('PutItem failed', err);
    return { statusCode: 500, body: `Failed to connect: ${err.message}` };
  }
  return { statusCode: 200, body: 'Connected.' };
};
