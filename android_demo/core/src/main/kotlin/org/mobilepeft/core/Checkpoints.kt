package org.mobilepeft.core

import java.io.File
import java.io.FileOutputStream
import java.nio.channels.FileChannel
import java.nio.file.StandardOpenOption

/**
 * Crash-safe writes: a file or a whole directory is written under a temporary name, fsynced, then
 * renamed into place (rename within one file system is atomic), so a killed app leaves the old
 * version or the new one, never half of one.
 */
object AtomicFiles {
    fun write(target: File, bytes: ByteArray) {
        val dir = target.absoluteFile.parentFile
        dir.mkdirs()
        val tmp = File(dir, ".${target.name}.tmp")
        try {
            FileOutputStream(tmp).use { out ->
                out.write(bytes)
                out.fd.sync()
            }
            if (!tmp.renameTo(target)) throw CheckpointError("cannot rename $tmp to $target")
        } finally {
            tmp.delete()
        }
        syncDirectory(dir)
    }

    /** fsync a directory so a rename in it survives power loss; best effort (not every file system allows it). */
    fun syncDirectory(dir: File) {
        // RandomAccessFile(dir) throws on the JVM and Android; a read-only FileChannel can fsync one.
        runCatching { FileChannel.open(dir.toPath(), StandardOpenOption.READ).use { it.force(true) } }
    }

    fun syncTree(dir: File) {
        dir.walkBottomUp().forEach { f ->
            if (f.isFile) runCatching { FileChannel.open(f.toPath(), StandardOpenOption.READ).use { it.force(true) } } else syncDirectory(f)
        }
    }
}

/**
 * A run's checkpoints, as runtime/checkpoint.py lays them out:
 *
 *     <run>/checkpoints/ckpt-00000012/   one complete checkpoint (step 12): meta.json + the trainer's files
 *     <run>/checkpoints/.tmp-00000015-*  one being written (ignored; removed by the next save)
 *
 * [save] writes everything into the temporary directory, fsyncs it, then renames it to
 * `ckpt-<step>`; the newest [keep] are kept. `meta.json` is the loop's state (step, data position,
 * masks, losses, ...); the trainer writes its weights and optimiser state beside it.
 */
class CheckpointStore(val runDir: File, val keep: Int = 2) {
    val root = File(runDir, DIR)

    init {
        if (keep < 1) throw ConfigError("keep=$keep checkpoints; expected >= 1.")
    }

    fun save(step: Int, meta: Map<String, Any?>, writeTrainer: (File) -> Unit): File {
        root.mkdirs()
        root.listFiles { f -> f.name.startsWith(TMP) }?.forEach { it.deleteRecursively() }
        val tmp = File(root, "$TMP${step.toString().padStart(8, '0')}-${System.nanoTime()}")
        if (!tmp.mkdirs()) throw CheckpointError("cannot create $tmp")
        writeTrainer(tmp)
        File(tmp, META_FILE).writeText(Json.dumps(meta + (STEP to step), indent = 1) + "\n")
        AtomicFiles.syncTree(tmp)
        val final = dirOf(step)
        if (final.exists()) final.deleteRecursively() // the same step saved again (a resumed run re-reaching it)
        if (!tmp.renameTo(final)) throw CheckpointError("cannot rename $tmp to $final")
        AtomicFiles.syncDirectory(root)
        complete().dropLast(keep).forEach { it.deleteRecursively() }
        return final
    }

    /** Complete checkpoints, oldest first. */
    fun complete(): List<File> =
        root.listFiles { f -> f.isDirectory && f.name.startsWith(PREFIX) && File(f, META_FILE).isFile }.orEmpty().sortedBy { it.name }

    fun latest(): File? = complete().lastOrNull()

    fun meta(dir: File): Map<*, *> = try {
        Json.parseFile(File(dir, META_FILE)) as? Map<*, *> ?: throw CheckpointError("$dir/$META_FILE is not a JSON object")
    } catch (e: JsonError) {
        throw CheckpointError("$dir/$META_FILE is not valid JSON (${e.message}); delete $dir to fall back to the previous checkpoint.", e)
    }

    private fun dirOf(step: Int) = File(root, "$PREFIX${step.toString().padStart(8, '0')}")

    companion object {
        const val DIR = "checkpoints"
        const val PREFIX = "ckpt-"
        const val TMP = ".tmp-"
        const val META_FILE = "meta.json"
        const val STEP = "step"
    }
}
