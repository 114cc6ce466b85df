import { test } from "node:test";
import assert from "node:assert/strict";
import { openApiDocument } from "./openapi.js";
import { buildRoutes } from "./routes.js";
import type { ServiceCore } from "../core.js";

// The route table only closes over the core; building the document never calls it.
const routes = buildRoutes(null as unknown as ServiceCore);

test("openApiDocument: every route is documented under its OpenAPI path with its operationId", () => {
  const doc = openApiDocument(routes, 65536) as {
    paths: Record<string, Record<string, { operationId: string }>>;
  };

  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, "{$1}");
    assert.equal(
      doc.paths[path]?.[r.method.toLowerCase()]?.operationId,
      r.operationId,
      `${r.method} ${r.url}`,
    );
  }
});

test("openApiDocument: the VM create body refuses extra properties, as the service does", () => {
  const doc = openApiDocument(routes, 65536) as {
    paths: Record<
      string,
      Record<
        string,
        {
          requestBody?: {
            content: Record<string, { schema: { additionalProperties?: boolean; required?: string[] } }>;
          };
        }
      >
    >;
  };

  const schema = doc.paths["/v1/vms"]?.post?.requestBody?.content["application/json"]?.schema;
  assert.equal(schema?.additionalProperties, false);
  assert.deepEqual(schema.required, ["name", "kernel"]);
});
