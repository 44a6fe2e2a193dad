package org.mobilepeft.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.media.ExifInterface
import android.net.Uri
import java.io.File
import java.io.InputStream
import java.util.zip.ZipInputStream
import org.mobilepeft.core.BundleError
import org.mobilepeft.core.Contract
import org.mobilepeft.core.DataError
import org.mobilepeft.core.FolderDataset
import org.mobilepeft.core.Json

/**
 * Where the app keeps bundles and the owner's examples, and how they get there:
 *
 *     <external files>/bundles/<name>/manifest.json ...   one directory per bundle (adb push, a picked .zip, or the APK's assets)
 *     <external files>/data/annotations.jsonl + images/   the owner's examples, the SDK's folder format
 *
 * `<external files>` is `/sdcard/Android/data/org.mobilepeft.demo/files`: adb can push into it and
 * the app reads it without a storage permission.
 */
class Library(private val context: Context) {
    val root: File get() = context.getExternalFilesDir(null) ?: context.filesDir
    val bundlesDir: File get() = File(root, BUNDLES)
    val dataDir: File get() = File(root, DATA)

    fun bundles(): List<File> =
        bundlesDir.listFiles { f -> File(f, Contract.MANIFEST_FILE).isFile }.orEmpty().sortedBy { it.name }

    /** Lines in the data folder's annotations file (valid or not: the reader reports bad ones at training time). */
    fun exampleCount(): Int = File(dataDir, FolderDataset.ANNOTATIONS_FILE).takeIf { it.isFile }?.readLines()?.count { it.isNotBlank() } ?: 0

    /**
     * Copies `assets/bundles/<name>/` and `assets/data/` of the APK (a sample a developer put there,
     * see README.md) into the library once; what is already there is kept.
     */
    fun installAssets() {
        for (name in context.assets.list(BUNDLES).orEmpty()) copyAsset("$BUNDLES/$name", File(bundlesDir, name))
        if (context.assets.list(DATA).orEmpty().isNotEmpty()) copyAsset(DATA, dataDir)
    }

    private fun copyAsset(path: String, target: File) {
        val children = context.assets.list(path).orEmpty()
        if (children.isEmpty()) {
            if (!target.exists()) context.assets.open(path).use { input -> writeAtomically(input, target) }
            return
        }
        target.mkdirs()
        for (child in children) copyAsset("$path/$child", File(target, child))
    }

    /** Unpacks a `.zip` bundle (as `mobile-peft export --zip` writes it) into `bundles/<name>/`; the directory it made. */
    fun importZip(uri: Uri, name: String): File {
        val target = File(bundlesDir, name.removeSuffix(".zip").replace(Regex("[^A-Za-z0-9._-]"), "_"))
        val tmp = File(bundlesDir, ".import-${System.nanoTime()}")
        tmp.mkdirs()
        try {
            val stream = context.contentResolver.openInputStream(uri) ?: throw DataError("cannot open $uri")
            ZipInputStream(stream.buffered()).use { zip ->
                while (true) {
                    val entry = zip.nextEntry ?: break
                    val out = File(tmp, entry.name).canonicalFile
                    // Zip-slip: an entry may not point outside the bundle directory.
                    if (!out.path.startsWith(tmp.canonicalPath + File.separator)) throw BundleError(name, listOf("zip entry ${entry.name} points outside the bundle"))
                    if (entry.isDirectory) out.mkdirs() else writeAtomically(zip, out, close = false)
                }
            }
            // A zip holds the bundle at its root or inside one top-level folder.
            val bundle = if (File(tmp, Contract.MANIFEST_FILE).isFile) tmp else tmp.listFiles()?.singleOrNull { File(it, Contract.MANIFEST_FILE).isFile }
                ?: throw BundleError(name, listOf("no ${Contract.MANIFEST_FILE} at the top of the zip; is it a bundle written by `mobile-peft export`?"))
            target.deleteRecursively()
            if (!bundle.renameTo(target)) throw BundleError(name, listOf("cannot move the unpacked bundle to $target"))
            return target
        } finally {
            tmp.deleteRecursively()
        }
    }

    /**
     * Adds one example to the data folder: the photo (upright per its EXIF orientation, long side
     * at most [MAX_SIDE] px, stored as PNG so the SDK reads the same pixels) and the
     * `{"image", "question", "answer"}` line.
     */
    fun addExample(open: () -> InputStream, question: String, answer: String): File {
        if (question.isBlank() || answer.isBlank()) throw DataError("an example needs a question and an answer.")
        val images = File(dataDir, FolderDataset.IMAGES_DIR).apply { mkdirs() }
        val bitmap = decodeUpright(open)
        val name = "photo-${System.currentTimeMillis()}.png"
        val file = File(images, name)
        file.outputStream().use { bitmap.compress(Bitmap.CompressFormat.PNG, 100, it) }
        bitmap.recycle()
        val line = linkedMapOf(
            FolderDataset.IMAGE to "${FolderDataset.IMAGES_DIR}/$name",
            FolderDataset.QUESTION to question.trim(),
            FolderDataset.ANSWER to answer.trim(),
        )
        File(dataDir, FolderDataset.ANNOTATIONS_FILE).appendText(Json.dumps(line) + "\n")
        return file
    }

    private fun decodeUpright(open: () -> InputStream): Bitmap {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open().use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0) throw DataError("the picked file is not an image Android can decode")
        var sample = 1
        while (maxOf(bounds.outWidth, bounds.outHeight) / (sample * 2) >= MAX_SIDE) sample *= 2
        val decoded = open().use { BitmapFactory.decodeStream(it, null, BitmapFactory.Options().apply { inSampleSize = sample }) }
            ?: throw DataError("cannot decode the picked image")
        val rotation = open().use { ExifInterface(it).uprightDegrees }
        val scale = minOf(1f, MAX_SIDE.toFloat() / maxOf(decoded.width, decoded.height))
        if (rotation == 0 && scale == 1f) return decoded
        val m = Matrix().apply {
            postScale(scale, scale)
            postRotate(rotation.toFloat())
        }
        return Bitmap.createBitmap(decoded, 0, 0, decoded.width, decoded.height, m, true).also { if (it !== decoded) decoded.recycle() }
    }

    private fun writeAtomically(input: InputStream, target: File, close: Boolean = true) {
        target.parentFile?.mkdirs()
        val tmp = File(target.parentFile, ".${target.name}.tmp")
        tmp.outputStream().use { out -> input.copyTo(out) }
        if (close) input.close()
        if (!tmp.renameTo(target)) throw DataError("cannot write $target")
    }

    companion object {
        const val BUNDLES = "bundles"
        const val DATA = "data"
        const val MAX_SIDE = 1024
    }
}

/** The rotation that makes the photo upright, from its EXIF orientation tag (`ExifInterface(InputStream)`: API 24). */
private val ExifInterface.uprightDegrees: Int
    get() = when (getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)) {
        ExifInterface.ORIENTATION_ROTATE_90 -> 90
        ExifInterface.ORIENTATION_ROTATE_180 -> 180
        ExifInterface.ORIENTATION_ROTATE_270 -> 270
        else -> 0
    }
