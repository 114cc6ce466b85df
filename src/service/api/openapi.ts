/**
 * The OpenAPI 3.1 document, generated from the route table's zod schemas.
 */
import * as z from "zod";
import type { Route } from "./route.js";
import { VERSION } from "../../util/version.js";

type JsonSchema = Record<string, unknown>;

function jsonSchema(schema: z.ZodType): JsonSchema {
  const out = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema;
  delete out.$schema;
  return out;
}

function parameters(schema: z.ZodType, where: "path" | "query"): JsonSchema[] {
  const s = jsonSchema(schema);
  const properties = (s.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((s.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => ({
    name,
    in: where,
    required: where === "path" || required.has(name),
    schema: property,
  }));
}

const errorSchema: JsonSchema = {
  type: "object",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string" },
        message: { type: "string" },
        field: { type: "string", description: "400: the field at fault, e.g. body.memoryMiB" },
        operation: { type: "string", description: "403: the operation the caller lacks" },
        state: { type: "string", description: "409: the VM's current state" },
      },
    },
  },
};

/** The document for `routes`. */
export function openApiDocument(routes: readonly Route[], bodyLimitBytes: number): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, "{$1}");
    const errorResponse = {
      description: "Error",
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    };
    const operation: JsonSchema = {
      operationId: r.operationId,
      summary: r.summary,
      tags: [r.tag],
      description: `Audited as \`${r.operation}\`.`,
      parameters: [...parameters(r.params, "path"), ...parameters(r.query, "query")],
      responses: {
        [String(r.status ?? 200)]: {
          description: "Success",
          content: { "application/json": { schema: {} } },
        },
        "400": errorResponse,
        "403": errorResponse,
        "404": errorResponse,
        "409": errorResponse,
        "413": errorResponse,
      },
    };
    if (r.body !== undefined) {
      operation.requestBody = {
        required: true,
        content: { "application/json": { schema: jsonSchema(r.body) } },
      };
    }
    (paths[path] ??= {})[r.method.toLowerCase()] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Palisade management service",
      version: VERSION,
      description: `Unix-socket REST API. The caller is identified by SO_PEERCRED; every request is authorized and audited. Bodies are limited to ${bodyLimitBytes} bytes.`,
    },
    paths,
    components: { schemas: { Error: errorSchema } },
  };
}
