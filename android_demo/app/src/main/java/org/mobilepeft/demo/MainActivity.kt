package org.mobilepeft.demo

import android.Manifest as AndroidManifest
import android.app.Activity
import android.app.AlertDialog
import android.content.Intent
import android.content.pm.PackageManager
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.provider.MediaStore
import android.provider.OpenableColumns
import android.text.InputType
import android.view.View
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ProgressBar
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import androidx.core.content.FileProvider
import java.io.File
import java.util.concurrent.Executors
import org.mobilepeft.core.AdapterFiles
import org.mobilepeft.core.Checksums
import org.mobilepeft.core.Contract
import org.mobilepeft.core.DataError

/**
 * The demo's one screen: pick a bundle (pushed, a picked `.zip`, or the APK's sample), add
 * examples (pick or take a photo, type the question and the answer), train N steps with progress,
 * loss chart, step time and memory, cancel, see accuracy before and after on the held-out split,
 * and share the personal adapter (PEFT files).
 *
 * The activity holds no run: [TrainingService] trains and [TrainingMonitor] holds the status, so
 * rotating the phone or closing the activity does not touch training; a recreated activity
 * re-attaches to the monitor. Everything that is logic lives in the core (`android_demo/core`).
 */
class MainActivity : Activity() {
    private val io = Executors.newSingleThreadExecutor() // imports and photo saving, off the main thread
    private lateinit var library: Library
    private lateinit var bundles: Spinner
    private lateinit var steps: EditText
    private lateinit var question: EditText
    private lateinit var answer: EditText
    private lateinit var dataInfo: TextView
    private lateinit var train: Button
    private lateinit var cancel: Button
    private lateinit var startOver: Button
    private lateinit var share: Button
    private lateinit var progress: ProgressBar
    private lateinit var stats: TextView
    private lateinit var chart: LossChartView
    private lateinit var log: TextView
    private var cameraFile: File? = null
    private val observer: (TrainingStatus) -> Unit = { render(it) }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        library = Library(this)
        cameraFile = savedInstanceState?.getString(STATE_CAMERA)?.let(::File)
        setContentView(layout())
        if (Build.VERSION.SDK_INT >= 33 && checkSelfPermission(AndroidManifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED) {
            requestPermissions(arrayOf(AndroidManifest.permission.POST_NOTIFICATIONS), 0) // the progress notification; training works without it
        }
        io.execute {
            runCatching { library.installAssets() }.onFailure { e -> runOnUiThread { toast("sample not installed: ${e.message}") } }
            runOnUiThread { refreshLibrary() }
        }
    }

    override fun onStart() {
        super.onStart()
        TrainingMonitor.observe(observer)
    }

    override fun onStop() {
        TrainingMonitor.stopObserving(observer)
        super.onStop()
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        cameraFile?.let { outState.putString(STATE_CAMERA, it.path) }
    }

    override fun onDestroy() {
        io.shutdown() // pending imports finish; training is the service's and goes on
        super.onDestroy()
    }

    private fun layout(): View {
        val column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(32, 32, 32, 32) }
        fun row(vararg views: View) = LinearLayout(this).apply { views.forEach { addView(it, LinearLayout.LayoutParams(0, -2, 1f)) } }
        fun button(text: String, onClick: () -> Unit) = Button(this).apply { this.text = text; setOnClickListener { onClick() } }
        fun heading(text: String) = TextView(this).apply { this.text = text; textSize = 18f; setPadding(0, 24, 0, 8) }

        column.addView(heading("1. Bundle"))
        bundles = Spinner(this).apply { id = ID_BUNDLES } // fixed ids: Android restores their state after a rotation
        column.addView(bundles)
        column.addView(button("Open a bundle .zip…") { pick(REQUEST_ZIP, "application/zip", "application/octet-stream") })

        column.addView(heading("2. Your examples"))
        dataInfo = TextView(this)
        column.addView(dataInfo)
        question = EditText(this).apply { id = ID_QUESTION; hint = "question, e.g. what is in the photo ?" }
        answer = EditText(this).apply { id = ID_ANSWER; hint = "the answer, e.g. a cat" }
        column.addView(question)
        column.addView(answer)
        column.addView(row(button("Pick photo") { pick(REQUEST_PHOTO, "image/*") }, button("Take photo") { takePhoto() }))

        column.addView(heading("3. Train"))
        steps = EditText(this).apply { id = ID_STEPS; inputType = InputType.TYPE_CLASS_NUMBER; setText("20"); hint = "total steps" }
        column.addView(steps)
        train = button("Train") { startTraining() }
        cancel = button("Cancel") { TrainingService.cancel(this) }
        column.addView(row(train, cancel))
        progress = ProgressBar(this, null, android.R.attr.progressBarStyleHorizontal)
        column.addView(progress)
        stats = TextView(this).apply { setTextIsSelectable(true) }
        column.addView(stats)
        chart = LossChartView(this)
        column.addView(chart, LinearLayout.LayoutParams(-1, 420))

        column.addView(heading("4. Your adapter"))
        share = button("Share the adapter (PEFT files)") { shareAdapter() }
        startOver = button("Start over (delete this bundle's run)") { confirmStartOver() }
        column.addView(row(share, startOver))
        log = TextView(this).apply { setTextIsSelectable(true); textSize = 12f }
        column.addView(log)
        return ScrollView(this).apply { addView(column) }
    }

    private fun refreshLibrary() {
        val names = library.bundles().map { it.name }
        val selected = bundles.selectedItem as? String
        bundles.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, names)
        names.indexOf(selected).takeIf { it >= 0 }?.let(bundles::setSelection)
        dataInfo.text = "${library.exampleCount()} examples in ${library.dataDir.path}" +
            if (names.isEmpty()) "\nNo bundle yet in ${library.bundlesDir.path}: open a .zip or push one (README.md)." else ""
        render(TrainingMonitor.status)
    }

    private fun selectedBundle(): File? = (bundles.selectedItem as? String)?.let { File(library.bundlesDir, it) }

    private fun startTraining() {
        val bundle = selectedBundle() ?: return toast("pick a bundle first")
        val n = steps.text.toString().toIntOrNull()?.takeIf { it >= 1 } ?: return toast("the number of steps must be a whole number >= 1")
        if (TrainingService.isRunning) return toast("a run is training; cancel it first")
        TrainingService.start(this, bundle, library.dataDir, n)
    }

    /** The run directory of the selected bundle (TrainingJob's layout), if it exists. */
    private fun runDir(): File? {
        val bundle = selectedBundle() ?: return null
        val manifest = File(bundle, Contract.MANIFEST_FILE).takeIf { it.isFile } ?: return null
        return File(File(filesDir, TrainingService.RUNS_DIR), "${bundle.name}-${Checksums.sha256Of(manifest).take(12)}").takeIf { it.isDirectory }
    }

    private fun shareAdapter() {
        val dir = TrainingMonitor.status.adapterDir ?: runDir()
        val files = listOf(AdapterFiles.CONFIG_FILE, AdapterFiles.WEIGHTS_FILE).map { File(dir, it) }
        if (dir == null || !files.all { it.isFile }) return toast("no personal adapter yet: train until the run completes or is cancelled")
        val uris = ArrayList(files.map { FileProvider.getUriForFile(this, "$packageName.files", it) })
        val send = Intent(Intent.ACTION_SEND_MULTIPLE).apply {
            type = "application/octet-stream"
            putParcelableArrayListExtra(Intent.EXTRA_STREAM, uris)
            addFlags(Intent.FLAG_GRANT_READ_URI_PERMISSION)
        }
        startActivity(Intent.createChooser(send, "Share adapter_config.json + adapter_model.safetensors"))
    }

    private fun confirmStartOver() {
        if (TrainingService.isRunning) return toast("cancel the run first")
        val dir = runDir() ?: return toast("this bundle has no run yet")
        AlertDialog.Builder(this)
            .setMessage("Delete ${dir.name}: its checkpoints and personal adapter?")
            .setPositiveButton("Delete") { _, _ ->
                dir.deleteRecursively()
                TrainingMonitor.update { TrainingStatus(log = it.log).logged("deleted ${dir.path}") }
            }
            .setNegativeButton("Keep", null)
            .show()
    }

    private fun pick(request: Int, vararg types: String) {
        val intent = Intent(Intent.ACTION_OPEN_DOCUMENT).apply {
            addCategory(Intent.CATEGORY_OPENABLE)
            type = types.first()
            putExtra(Intent.EXTRA_MIME_TYPES, types)
        }
        startActivityForResult(intent, request)
    }

    private fun takePhoto() {
        if (!readyForExample()) return
        val file = File(File(cacheDir, "photos").apply { mkdirs() }, "capture-${System.currentTimeMillis()}.jpg")
        cameraFile = file
        val intent = Intent(MediaStore.ACTION_IMAGE_CAPTURE)
            .putExtra(MediaStore.EXTRA_OUTPUT, FileProvider.getUriForFile(this, "$packageName.files", file))
            .addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION)
        runCatching { startActivityForResult(intent, REQUEST_CAMERA) }.onFailure { toast("no camera app: ${it.message}") }
    }

    private fun readyForExample(): Boolean {
        if (question.text.isBlank() || answer.text.isBlank()) {
            toast("type the question and the answer first")
            return false
        }
        return true
    }

    @Deprecated("Activity.onActivityResult: this demo avoids AndroidX's activity-result API")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK) return
        when (requestCode) {
            REQUEST_ZIP -> data?.data?.let(::importZip)
            REQUEST_PHOTO -> data?.data?.let { uri -> if (readyForExample()) addExample(open = { contentResolver.openInputStream(uri) ?: throw DataError("cannot open the picked photo") }) }
            REQUEST_CAMERA -> cameraFile?.let { f -> addExample(open = { f.inputStream() }, then = { f.delete() }) }
        }
    }

    private fun importZip(uri: Uri) {
        val name = contentResolver.query(uri, arrayOf(OpenableColumns.DISPLAY_NAME), null, null, null)?.use { c ->
            if (c.moveToFirst()) c.getString(0) else null
        } ?: "bundle.zip"
        toast("unpacking $name…")
        io.execute {
            val result = runCatching { library.importZip(uri, name) }
            runOnUiThread {
                result.onSuccess { toast("bundle ${it.name} added (its checksums are checked when training starts)") }.onFailure { toast("not a bundle: ${it.message}") }
                refreshLibrary()
            }
        }
    }

    private fun addExample(open: () -> java.io.InputStream, then: () -> Unit = {}) {
        val q = question.text.toString()
        val a = answer.text.toString()
        io.execute {
            val result = runCatching { library.addExample(open, q, a) }
            then()
            runOnUiThread {
                result.onSuccess { question.text.clear(); answer.text.clear(); toast("example added") }.onFailure { toast("not added: ${it.message}") }
                refreshLibrary()
            }
        }
    }

    private fun render(s: TrainingStatus) {
        if (!::stats.isInitialized) return
        train.isEnabled = !s.running
        cancel.isEnabled = s.running
        startOver.isEnabled = !s.running
        progress.max = maxOf(1, s.totalSteps)
        progress.progress = s.step
        progress.isIndeterminate = s.phase == RunPhase.PREPARING || s.phase == RunPhase.EVALUATING
        fun pct(x: Double?) = x?.let { "%.1f%%".format(100 * it) } ?: "–"
        fun mb(kb: Long?) = kb?.let { "%.0f MB".format(it / 1024.0) } ?: "–"
        stats.text = buildString {
            append("${s.phase.name.lowercase()}: ${s.message}\n")
            append("step ${s.step} / ${s.totalSteps}")
            s.losses.lastOrNull()?.let { append("   loss %.4f".format(it)) }
            s.lastStepMs?.let { append("   $it ms/step") }
            append("\nmemory (PSS) ${mb(s.pssKb)}, peak ${mb(s.peakPssKb)}")
            append("\naccuracy before ${pct(s.accuracyBefore)}   after ${pct(s.accuracyAfter)}")
            s.evalExamples?.let { append("  (held-out: $it examples, training: ${s.trainExamples})") }
            s.adapterDir?.let { append("\nadapter: ${it.path}") }
        }
        chart.setLosses(s.losses)
        log.text = s.log.joinToString("\n")
    }

    private fun toast(text: String) = android.widget.Toast.makeText(this, text, android.widget.Toast.LENGTH_LONG).show()

    companion object {
        private const val REQUEST_ZIP = 1
        private const val REQUEST_PHOTO = 2
        private const val REQUEST_CAMERA = 3
        private const val STATE_CAMERA = "camera_file"
        private const val ID_BUNDLES = 101
        private const val ID_QUESTION = 102
        private const val ID_ANSWER = 103
        private const val ID_STEPS = 104
    }
}
