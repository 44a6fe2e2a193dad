package org.mobilepeft.demo

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.Path
import android.view.View

/** The training loss per step as a line, with the first and last step and the loss range labelled. Non-finite losses are gaps. */
class LossChartView(context: Context) : View(context) {
    private var losses: List<Float> = emptyList()
    private val line = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.rgb(33, 150, 243)
        style = Paint.Style.STROKE
        strokeWidth = 4f
    }
    private val axis = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.GRAY
        strokeWidth = 2f
    }
    private val label = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.DKGRAY
        textSize = 28f
    }

    fun setLosses(values: List<Float>) {
        if (values == losses) return
        losses = values
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val pad = 56f
        val w = width - 2 * pad
        val h = height - 2 * pad
        canvas.drawLine(pad, pad, pad, pad + h, axis)
        canvas.drawLine(pad, pad + h, pad + w, pad + h, axis)
        val finite = losses.filter { it.isFinite() }
        if (finite.isEmpty()) {
            canvas.drawText("loss per step appears here", pad + 8, pad + h / 2, label)
            return
        }
        val lo = finite.min()
        val hi = finite.max().let { if (it - lo < 1e-6f) lo + 1f else it }
        val path = Path()
        var open = false
        losses.forEachIndexed { i, v ->
            if (!v.isFinite()) {
                open = false
                return@forEachIndexed
            }
            val x = pad + if (losses.size == 1) w / 2 else w * i / (losses.size - 1)
            val y = pad + h * (1 - (v - lo) / (hi - lo))
            if (open) path.lineTo(x, y) else path.moveTo(x, y)
            open = true
        }
        canvas.drawPath(path, line)
        canvas.drawText("%.3f".format(hi), 4f, pad + label.textSize / 2, label)
        canvas.drawText("%.3f".format(lo), 4f, pad + h, label)
        canvas.drawText("1", pad, pad + h + label.textSize + 8, label)
        val last = "${losses.size}"
        canvas.drawText(last, pad + w - label.measureText(last), pad + h + label.textSize + 8, label)
    }
}
