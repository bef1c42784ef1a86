import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorEnvelope } from '../messages/message.ts';

// Requests Node's HTTP parser refuses before Express sees them (NUL or bare CR in a header, both
// Content-Length and Transfer-Encoding, oversized headers, a broken chunk size …). Node would answer a
// bare 400 with no body; callers get the same JSON envelope as for every other refusal instead.
// Nothing from the request is echoed back.

const ANSWERS: Record<string, [status: number, reason: string, message: string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'Request headers too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'Request not received in time'],
};
const MALFORMED: [number, string, string] = [400, 'Bad Request', 'Malformed HTTP request'];

export function answerMalformedRequests(server: Server): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex & { bytesWritten?: number }) => {
    // Gone, or halfway through another answer on this connection: nothing sensible can be written.
    if (error.code === 'ECONNRESET' || !socket.writable || (socket.bytesWritten ?? 0) > 0) {
      socket.destroy();
      return;
    }
    const [status, reason, message] = ANSWERS[error.code ?? ''] ?? MALFORMED;
    const body = JSON.stringify(errorEnvelope(message));
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}
