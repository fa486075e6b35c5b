// Plain AWS Lambda handlers for Node.js (API Gateway WebSocket events). Nothing here knows
// about Switchboard: the same file deploys to AWS as it is.

const reply = (payload) => ({ statusCode: 200, body: JSON.stringify(payload) });

// A two-way route: echoes the message's "text" and reports what the context says.
exports.echo = async (event, context) => {
  const message = JSON.parse(event.body);
  console.log(`echo handler called: ${message.text}`);
  return reply({
    echo: message.text,
    routeKey: event.requestContext.routeKey,
    connectionId: event.requestContext.connectionId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    memoryLimitInMB: context.memoryLimitInMB,
    invokedFunctionArn: context.invokedFunctionArn,
    awsRequestId: context.awsRequestId,
    remainingMs: context.getRemainingTimeInMillis(),
    logGroupName: context.logGroupName,
    region: process.env.AWS_REGION,
    tableName: process.env.TABLE_NAME,
    pid: process.pid,
  });
};

// $connect: ?deny=1 refuses with 403, ?fail=1 throws, ?sleep=<ms> sleeps first.
exports.connect = async (event) => {
  const query = event.queryStringParameters || {};
  if (query.sleep) {
    await new Promise((resolve) => setTimeout(resolve, Number(query.sleep)));
  }
  if (query.fail) {
    throw new Error("connect handler failed on purpose");
  }
  return { statusCode: query.deny ? 403 : 200 };
};

exports.throws = async () => {
  throw new Error("handler failed on purpose");
};

// Sleeps `sleep` milliseconds first, if asked.
exports.sleeps = async (event) => {
  const message = JSON.parse(event.body);
  if (message.sleep) {
    await new Promise((resolve) => setTimeout(resolve, message.sleep));
  }
  return reply({ awake: true, pid: process.pid });
};

// Exits the process (a crash) if asked.
exports.exits = async (event) => {
  const message = JSON.parse(event.body);
  if (message.exit) {
    process.exit(1);
  }
  return reply({ alive: true, pid: process.pid });
};
