# portrait-batch: one image for every role (webhook, worker, producer CLI).
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src
COPY examples ./examples
USER node
ENTRYPOINT ["node", "bin/portrait-batch.js"]
CMD ["--help"]
