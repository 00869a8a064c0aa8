'use strict';
// A client of API Hub written against schemas/asyncapi.yaml with kafkajs: it sends ApiRequest messages on
// the request channel (key = limit domain, reply address in the body, its own 16-byte kafka_correlationId)
// and matches each ApiResponse on the response channel by those exact bytes (docs/CONTRACT.md).
//
// Usage: node client.js BOOTSTRAP REQUEST_TOPIC RESPONSE_TOPIC CALLER PROVIDER/TR_ID=PARAMS_JSON...
// Prints one JSON line per answer: the correlation id sent, the answer's headers (hex) and its body.
const crypto = require('node:crypto');
const { Kafka, logLevel } = require('kafkajs');

const REPLY_TIMEOUT_MS = 60_000;
const DEADLINE_MS = 30_000;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function parseCall(spec) {
  const slash = spec.indexOf('/');
  const equals = spec.indexOf('=');
  return {
    name: spec.slice(0, equals),
    provider: spec.slice(0, slash),
    trId: spec.slice(slash + 1, equals),
    params: JSON.parse(spec.slice(equals + 1)),
  };
}

async function main() {
  const [bootstrap, requestTopic, responseTopic, caller, ...specs] = process.argv.slice(2);
  if (!specs.length) {
    console.error('usage: node client.js BOOTSTRAP REQUEST_TOPIC RESPONSE_TOPIC CALLER PROVIDER/TR_ID=JSON...');
    process.exit(2);
  }
  const kafka = new Kafka({ clientId: caller, brokers: bootstrap.split(','), logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  const producer = kafka.producer();
  // A group of its own: kafkajs has no manual assignment, so this client owns every partition of the
  // response topic and names one of them as its reply partition.
  const consumer = kafka.consumer({ groupId: `${caller}-replies-${crypto.randomUUID()}` });
  const pending = new Map(); // correlation id (hex) -> resolve

  await admin.connect();
  const ends = await admin.fetchTopicOffsets(responseTopic); // answers before these are not ours
  await admin.disconnect();
  await producer.connect();
  await consumer.connect();
  const joined = new Promise((resolve) => {
    consumer.on(consumer.events.GROUP_JOIN, (event) => resolve(event.payload.memberAssignment));
  });
  await consumer.subscribe({ topic: responseTopic, fromBeginning: false });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const raw = (message.headers || {}).kafka_correlationId;
      const id = raw ? Buffer.from(raw).toString('hex') : '';
      const resolve = pending.get(id);
      if (resolve) {
        pending.delete(id);
        resolve({ partition, message });
      }
    },
  });
  const assignment = await withTimeout(joined, 60_000, 'joining the reply group');
  const replyPartition = Math.min(...assignment[responseTopic]);
  for (const { partition, offset } of ends) {
    consumer.seek({ topic: responseTopic, partition, offset });
  }

  try {
    for (const spec of specs) {
      const call = parseCall(spec);
      const correlation = crypto.randomBytes(16);
      const now = Date.now();
      const request = {
        request_id: crypto.randomUUID(),
        provider: call.provider,
        tr_id: call.trId,
        params: call.params,
        caller,
        deadline_ms: now + DEADLINE_MS,
        created_at_ms: now,
        reply_topic: responseTopic,
        reply_partition: replyPartition,
      };
      const answered = new Promise((resolve) => pending.set(correlation.toString('hex'), resolve));
      await producer.send({
        topic: requestTopic,
        messages: [{ key: call.provider, value: JSON.stringify(request), headers: { kafka_correlationId: correlation } }],
      });
      const { partition, message } = await withTimeout(answered, REPLY_TIMEOUT_MS, `the answer to ${call.name}`);
      const headers = {};
      for (const [name, value] of Object.entries(message.headers || {})) {
        headers[name] = Buffer.from(value).toString('hex');
      }
      console.log(JSON.stringify({
        call: call.name,
        sent_correlation_id: correlation.toString('hex'),
        request_id: request.request_id,
        partition,
        key: message.key ? message.key.toString() : '',
        headers,
        response: JSON.parse(message.value.toString()),
      }));
    }
  } finally {
    await consumer.disconnect();
    await producer.disconnect();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
