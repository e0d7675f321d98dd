// Report files are written through a temporary file and a rename, so a crash mid-write (or a
// reader such as a browser refreshing the report) never sees half a file.
import { rename, unlink, writeFile } from 'node:fs/promises';

export async function writeReportFile(path: string, data: string | Uint8Array): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}-${Date.now().toString(36)}`;
  try {
    await writeFile(temporary, data);
    await rename(temporary, path);
  } catch (e) {
    await unlink(temporary).catch(() => undefined);
    throw e;
  }
}
