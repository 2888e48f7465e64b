# portrait-batch: one image for every role (webhook, worker, scheduler, emulator, producer CLI).
# Node 22 LTS; production dependencies only: the embedded S3 server (s3rver, with its XML and
# multipart parsers) is a dev dependency for the demo and the tests, never in this image.
FROM node:22.14.0-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY src ./src
COPY examples ./examples
USER node
ENTRYPOINT ["node", "bin/portrait-batch.js"]
CMD ["--help"]
