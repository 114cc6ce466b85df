/**
 * A QMP client over a Unix socket: capabilities negotiation, commands with timeouts and
 * ids, and events delivered to listeners.
 */
import { EventEmitter } from "node:events";
import { createConnection, type Socket } from "node:net";
import { PalisadeError } from "../../util/errors.js";
import { MAX_QMP_LINE_BYTES, QmpProtocolError, parseQmpLine, type QmpMessage } from "./message.js";

export class QmpError extends PalisadeError {
  readonly code: string;
  constructor(message: string, code = "qmp.failed", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

export type QmpEvent = Extract<QmpMessage, { kind: "event" }>;

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [];
}

/** A connected, negotiated QMP session; create with {@link QmpClient.connect}. */
export class QmpClient extends EventEmitter<QmpClientEvents> {
  readonly #socket: Socket;
  readonly #pending = new Map<string, Pending>();
  readonly #label: string;
  #buffer = "";
  #nextId = 1;
  #closed = false;
  #greeting: ((version: string) => void) | null = null;

  private constructor(socket: Socket, label: string) {
    super();
    this.#socket = socket;
    this.#label = label;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.#onData(chunk);
    });
    socket.on("close", () => {
      this.#onClose();
    });
    socket.on("error", () => {
      // "close" follows and fails whatever is pending.
    });
  }

  /**
   * Connects to a QMP socket and negotiates capabilities.
   * @throws {QmpError} when the socket cannot be reached or the handshake fails in time.
   */
  static async connect(path: string, label: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = createConnection(path);
    const client = new QmpClient(socket, label);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new QmpError(`QMP of VM ${label}: no greeting within ${timeoutMs} ms`, "qmp.timeout"));
      }, timeoutMs);
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(new QmpError(`QMP of VM ${label}: cannot connect to ${path}: ${error.message}`, "qmp.connect", { cause: error }));
      });
      client.#greeting = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    await client.execute("qmp_capabilities", undefined, timeoutMs);
    return client;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs a QMP command and returns its `return` value.
   * @throws {QmpError} on an error reply, a timeout or a closed connection.
   */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    if (this.#closed) return Promise.reject(new QmpError(`QMP command "${command}" for VM ${this.#label}: connection closed`, "qmp.closed"));
    const id = `p${this.#nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new QmpError(`QMP command "${command}" for VM ${this.#label}: no reply within ${timeoutMs} ms`, "qmp.timeout"));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      this.#socket.write(JSON.stringify({ execute: command, ...(args === undefined ? {} : { arguments: args }), id }) + "\n");
    });
  }

  /** Closes the connection; pending commands fail. */
  close(): void {
    this.#socket.destroy();
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    let newline: number;
    while ((newline = this.#buffer.indexOf("\n")) >= 0) {
      const line = this.#buffer.slice(0, newline).trim();
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line !== "") this.#onLine(line);
    }
    if (this.#buffer.length > MAX_QMP_LINE_BYTES) {
      // A worker that floods QMP is broken or hostile: stop listening to it.
      this.#socket.destroy(new QmpProtocolError(`QMP of VM ${this.#label}: line over ${MAX_QMP_LINE_BYTES} bytes`));
    }
  }

  #onLine(line: string): void {
    let message: QmpMessage;
    try {
      message = parseQmpLine(line);
    } catch (error: unknown) {
      if (error instanceof QmpProtocolError) return; // dropped; the command it answered times out
      throw error;
    }
    switch (message.kind) {
      case "greeting":
        this.#greeting?.(message.version);
        this.#greeting = null;
        return;
      case "event":
        this.emit("event", message);
        return;
      case "return":
      case "error": {
        const pending = message.id === null ? undefined : this.#pending.get(message.id);
        if (pending === undefined || message.id === null) return;
        this.#pending.delete(message.id);
        clearTimeout(pending.timer);
        if (message.kind === "return") pending.resolve(message.value);
        else
          pending.reject(
            new QmpError(`QMP command "${pending.command}" failed for VM ${this.#label}: ${message.description}`, `qmp.${message.errorClass}`),
          );
      }
    }
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new QmpError(`QMP command "${pending.command}" for VM ${this.#label}: connection closed`, "qmp.closed"));
      this.#pending.delete(id);
    }
    this.emit("close");
  }
}
