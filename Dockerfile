# portrait-batch: one image for every role (webhook, worker, scheduler, emulator, producer CLI).
# Two stages. `build` compiles src/ to dist/ with the dev dependencies (TypeScript; scripts/build.mjs).
# The image itself: Node 22 LTS, production dependencies only, and the compiled JavaScript run by plain
# `node dist/cli.js`: no TypeScript loader (tsx), no compiler, no src/, and no embedded S3 server
# (s3rver, with its XML and multipart parsers, is a dev dependency for the demo and the tests). sharp
# stays: the `emulator` command (compose profile `emulator`) draws its portraits with it.
FROM node:22.14.0-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Install scripts are not needed to compile (sharp's and esbuild's only fetch or check binaries).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/
COPY src ./src
RUN npm run build

FROM node:22.14.0-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
# Node's on-disk cache of compiled modules: a second command in the same container (a liveness exec,
# `docker compose exec … status`) starts without compiling them again.
ENV NODE_COMPILE_CACHE=/tmp/node-compile-cache
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# bin/ as well: `node bin/portrait-batch.js`, the command's path in the package, runs dist/ too.
COPY bin ./bin
COPY examples ./examples
USER node
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["--help"]
