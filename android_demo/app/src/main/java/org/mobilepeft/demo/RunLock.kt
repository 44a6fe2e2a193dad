package org.mobilepeft.demo

import java.io.File
import java.io.RandomAccessFile
import java.nio.channels.FileChannel
import java.nio.channels.FileLock
import java.nio.channels.OverlappingFileLockException
import org.mobilepeft.core.CheckpointError

/**
 * At most one training run per run directory (so per checkpoint), across threads and processes:
 * an exclusive lock on `<run>/run.lock`. The JVM refuses a second lock on the same file from the
 * same process ([OverlappingFileLockException]) and the OS one from another process, so a service
 * restarted while an old run still finishes, a second Train press, or a second process all get a
 * clear [CheckpointError] instead of two loops writing the same checkpoints. The OS drops the lock
 * when the process dies, so a killed run never leaves it stale.
 */
class RunLock private constructor(private val channel: FileChannel, private val lock: FileLock) : AutoCloseable {
    override fun close() {
        runCatching { lock.release() }
        channel.close()
    }

    companion object {
        const val FILE = "run.lock"

        fun acquire(runDir: File): RunLock {
            runDir.mkdirs()
            val channel = RandomAccessFile(File(runDir, FILE), "rw").channel
            val lock = try {
                channel.tryLock()
            } catch (e: OverlappingFileLockException) {
                null
            } catch (e: Exception) {
                channel.close()
                throw e
            }
            if (lock == null) {
                channel.close()
                throw CheckpointError("another training run is using $runDir; wait for it to finish or cancel it first.")
            }
            return RunLock(channel, lock)
        }
    }
}
